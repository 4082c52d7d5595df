"""The scenarios the runner knows: each is loadtests/scenarios/<name>.{py,conf} plus loadtests/slo/<name>.toml."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Where writer users find the editor account (the runner sets them, creating the account when it can).
EDITOR_USERNAME_ENV, EDITOR_PASSWORD_ENV = "LOADTEST_EDITOR_USERNAME", "LOADTEST_EDITOR_PASSWORD"


@dataclass(frozen=True)
class Scenario:
    name: str
    summary: str
    writes: bool = False  # needs an editor account (LOADTEST_EDITOR_USERNAME/_PASSWORD, or the runner makes one)
    flush_cache: bool = False  # the runner empties Redis before the measured run (after any warm-up)
    warmup_s: int = 20  # default warm-up before measuring (the scenario's own load, not measured; 0: none)
    warmup_with: str | None = None  # another scenario's locustfile and conf to warm up with (spike: readers)
    capacity: bool = False  # the capacity search (run.py steps a mix's rate up; see loadtests/capacity.py)
    mix: str | None = None  # the locustfile's scenario when it is another one's (capacity: readers by default)
    one_process: bool = False  # refuses --processes (streamers: writes and received events are matched in-process)
    chaos: bool = False  # a fault schedule runs against the local stack during the load (loadtests/chaos.py)

    @property
    def locustfile(self) -> Path:
        return HERE / "scenarios" / f"{self.mix or self.name}.py"

    @property
    def conf(self) -> Path:
        return HERE / "scenarios" / f"{self.name}.conf"

    @property
    def slo(self) -> Path:
        return HERE / "slo" / f"{self.name}.toml"


SCENARIOS = {
    s.name: s
    for s in (
        Scenario("readers", "browsing readers (Zipf over every feed, detail, comments) and deep walkers"),
        Scenario("pollers", "conditional re-polls of subscribed first pages (If-None-Match, mostly 304)"),
        Scenario("mixed", "readers + pollers + editors writing, with read-after-write checks", writes=True),
        Scenario("cold", "a uniform spread of keys on a flushed Redis (mostly misses)", flush_cache=True, warmup_s=0),
        Scenario(
            "spike", "readers at a baseline, a sudden 8x spike, back to baseline (LoadTestShape)", warmup_with="readers"
        ),
        Scenario("smoke", "CI: ~25 s at a low rate, every user kind including writers", writes=True, warmup_s=10),
        Scenario(
            "capacity",
            "step the offered rate of a mix up until an SLO breaks, bisect: the knee and what saturated",
            capacity=True,
            mix="readers",
        ),
        # No warm-up: it would leave streams' memory in the workers before the idle-memory reading.
        Scenario(
            "streamers",
            "SSE clients with forced reconnects while an editor writes (issue 13)",
            writes=True,
            warmup_s=0,
            one_process=True,
        ),
        # Issue 12's proof: faults into the local stack under the mixed load with keyed writes; no --processes
        # (the audit and the stale-read judgement need the writers' ledger in the readers' process).
        Scenario(
            "chaos",
            "mixed load with Idempotency-Keys while Redis, PostgreSQL and gunicorn are killed, stopped, restarted",
            writes=True,
            warmup_s=10,
            one_process=True,
            chaos=True,
        ),
    )
}
MIXES = ("readers", "pollers", "mixed")  # the mixes a capacity search can run
