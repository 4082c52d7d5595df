"""The capacity search on synthetic step results: step-up, bisection, the knee, what broke and what saturated."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from loadtests import capacity
from loadtests.capacity import KneeSearch, SearchConfig, Step

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def drive(search: KneeSearch, passes: Callable[[float], bool]) -> list[float]:
    """Run the search against a synthetic stack: `passes(rate)` says whether a step at that rate meets its SLOs."""
    tried = []
    while (rate := search.next_rate()) is not None:
        tried.append(rate)
        search.record(rate, passes(rate))
    return tried


def test_steps_up_then_bisects_to_the_resolution() -> None:
    search = KneeSearch(SearchConfig(start_rate=100, factor=2, max_rate=6400, resolution=0.10))
    tried = drive(search, lambda rate: rate <= 1050)
    assert tried[:5] == [100, 200, 400, 800, 1600]  # x2 until the first breach
    assert tried[5:] == [1200, 1000, 1100]  # midpoints of [800, 1600], [800, 1200], [1000, 1200]
    assert search.knee == 1000 and search.lowest_failure == 1100
    assert search.stopped == capacity.STOP_BRACKETED


@pytest.mark.parametrize("true_knee", [37.0, 180.0, 555.0, 2900.0, 6000.0])
def test_the_knee_is_within_the_resolution_below_the_true_capacity(true_knee: float) -> None:
    search = KneeSearch(SearchConfig(start_rate=100, factor=2, max_rate=6400, resolution=0.05, max_steps=30))
    drive(search, lambda rate: rate <= true_knee)
    assert search.knee is not None and search.lowest_failure is not None
    assert search.knee <= true_knee < search.lowest_failure <= search.knee * 1.05 + 1


def test_every_step_passing_stops_at_the_maximum_rate() -> None:
    search = KneeSearch(SearchConfig(start_rate=100, factor=3, max_rate=1000))
    assert drive(search, lambda rate: True) == [100, 300, 900, 1000]  # the last step is capped at the maximum
    assert search.knee == 1000 and search.lowest_failure is None
    assert search.stopped == capacity.STOP_MAX_RATE


def test_a_failing_first_step_steps_down_then_bisects() -> None:
    search = KneeSearch(SearchConfig(start_rate=400, factor=2, min_rate=10, resolution=0.10))
    tried = drive(search, lambda rate: rate <= 130)
    assert tried[:3] == [400, 200, 100]
    assert search.knee is not None and 100 <= search.knee <= 130 < (search.lowest_failure or 0)


def test_nothing_passing_ends_at_the_minimum_rate_without_a_knee() -> None:
    search = KneeSearch(SearchConfig(start_rate=100, factor=2, min_rate=20))
    assert drive(search, lambda rate: False) == [100, 50, 25, 20]
    assert search.knee is None and search.stopped == capacity.STOP_MIN_RATE


def test_the_step_limit_ends_the_search_with_the_bracket_so_far() -> None:
    search = KneeSearch(SearchConfig(start_rate=100, factor=2, max_steps=3))
    assert drive(search, lambda rate: rate < 300) == [100, 200, 400]
    assert (search.knee, search.lowest_failure, search.stopped) == (200, 400, capacity.STOP_STEPS)


def test_a_pass_above_a_failure_does_not_count_as_the_knee() -> None:
    """Noise: a higher rate passing after a lower one failed; the knee stays below the lowest failure."""
    search = KneeSearch(SearchConfig())
    for rate, ok in [(100, True), (200, True), (400, False), (300, False), (800, True)]:
        search.record(rate, ok)
    assert search.knee == 200 and search.lowest_failure == 300


def test_the_budget_stop_is_kept() -> None:
    search = KneeSearch(SearchConfig())
    search.record(100, True)
    search.stop(capacity.STOP_BUDGET)
    assert search.next_rate() is None and search.stopped == capacity.STOP_BUDGET


@pytest.mark.parametrize(
    "kwargs", [{"start_rate": 0}, {"min_rate": 200, "start_rate": 100}, {"factor": 1.0}, {"max_steps": 0}]
)
def test_bad_configurations(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        SearchConfig(**kwargs)


def usage(app: float, generator: float, busiest_generator: float, others: float = 0.0) -> dict[str, Any]:
    return {
        "elapsed_s": 15.0,
        "ncpu": 2,
        "groups": {
            "app": {"cores": app, "processes": 3, "busiest_pid": 11, "busiest_cores": app / 2},
            "generator": {"cores": generator, "processes": 3, "busiest_pid": 21, "busiest_cores": busiest_generator},
        },
        "busy_cores": app + generator + others,
        "steal_cores": 0.0,
        "others_cores": others,
        "loadavg_max": 2.5,
        "loadavg_mean": 2.0,
        "machine_load": (app + generator + others) / 2,
    }


def step(index: int, rate: float, ok: bool, **overrides: Any) -> Step:
    values: dict[str, Any] = {
        "index": index,
        "rate": rate,
        "users": int(rate // 4),
        "run_dir": f"steps/{index:02d}-{rate:g}rps",
        "ok": ok,
        "breaches": [] if ok else [{"name": "p99 latency", "limit": "<= 100 ms", "measured": "180 ms"}],
        "target_rps": rate,
        "achieved_rps": rate * 0.99,
        "requests": int(rate * 15),
        "failure_ratio": 0.0,
        "rate_ratio": 1.0,
        "lag_p99_ms": 1.0,
        "p50_ms": 2.0,
        "p95_ms": 20.0 if ok else 90.0,
        "p99_ms": 40.0 if ok else 180.0,
        "max_ms": 300.0,
        "usage": usage(rate / 1000, rate / 2000, rate / 3000),
        "saturation": f"app at {rate:g}",
        "saturated": [] if ok else ["app"],
        "generator_busiest": rate / 3000,
        "wall_s": 20.0,
    }
    values.update(overrides)
    return Step(**values)


def test_the_verdict_names_the_first_breach_and_saturation_at_the_lowest_failing_rate() -> None:
    search = KneeSearch(SearchConfig())
    steps = [step(1, 400, True), step(2, 800, True), step(3, 1600, False), step(4, 1200, False), step(5, 1000, True)]
    steps[3].breaches = [{"name": "schedule lag p99", "limit": "<= 100 ms", "measured": "300 ms"}]
    steps[3].saturation = "the load generator (pid 21 at 85% of a core)"
    steps[2].generator_busiest = 0.9
    for s in steps:
        search.record(s.rate, s.ok)
    result = capacity.result_summary(search, steps)
    assert result["knee_rps"] == 1000 and result["lowest_failing_rps"] == 1200
    assert result["first_breach"][0]["name"] == "schedule lag p99"  # at 1200, not at 1600
    assert result["saturated_at_failure"].startswith("the load generator")
    assert result["knee_step"] == "steps/05-1000rps" and result["failing_step"] == "steps/04-1200rps"
    assert result["generator_flagged_steps"] == [1600]
    assert capacity.breach_text(result["first_breach"]) == "schedule lag p99 300 ms (limit <= 100 ms)"


def test_the_report_files(tmp_path: Path) -> None:
    search = KneeSearch(SearchConfig())
    steps = [step(1, 100, True), step(2, 200, True), step(3, 400, False), step(4, 300, True)]
    for s in steps:
        search.record(s.rate, s.ok)
    meta = {
        "mix": "readers",
        "via": "nginx",
        "command": "python loadtests/run.py capacity",
        "search": "start 100",
        "slo_file": "loadtests/slo/capacity.toml",
        "elapsed_s": 95.0,
        "processes": 2,
        "machine": "load average 0.5",
    }
    result = capacity.write_report(tmp_path, meta, search, steps, p99_limit=100.0)
    assert result["knee_rps"] == 300
    data = json.loads((tmp_path / "summary.json").read_text())
    assert data["kind"] == "capacity" and data["knee_rps"] == 300 and len(data["steps"]) == 4
    markdown = (tmp_path / "summary.md").read_text()
    assert markdown.startswith("# Capacity: readers via nginx: knee **300 req/s**")
    assert "| 3 | 400 | 100 | 400 | 396 |" in markdown and "**p99 latency**" in markdown
    png = (tmp_path / "capacity.png").read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 30_000
