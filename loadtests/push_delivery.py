"""Live deliveries and replays of a streamers run (issue 13), kept apart (no Locust import: run.py and the
tests must stay unpatched by gevent).

The scenario drops every stream now and then; the stream resumes with Last-Event-ID and is replayed what
it missed. An event committed while its client was away cannot reach it before the client comes back, so
its delay from `written_at` measures the client's absence, not the push path: those deliveries sat at the
run's p99 (1-5% of all). The goal "commit-to-event p99 < 100 ms" is about a connected client hearing
about a commit, so it is judged on live deliveries; replays are reported beside it, timed from the
moment the client asked again.

- live (`SSE commit-to-event`): the event's write began (`written_at`, just before its COMMIT) after this
  connection's request was sent, or the connection is the stream's first (no Last-Event-ID: nothing to
  replay; an event whose write began while it was opening is counted live, from `written_at`, which only
  ever makes live look slower). Timed from `written_at` to its arrival at the client's socket.
- replay (`SSE replay after reconnect`): the event's write began before a resumed connection's request
  was sent. Timed from that request to the event's arrival. Those committed while the previous connection
  was still open (sent to it too late: the drop cut them off) are counted too, as `sse_replays_cut`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from loadtests import timings

LIVE = "SSE commit-to-event"
REPLAY = "SSE replay after reconnect"


@dataclass(frozen=True)
class Connection:
    """One connection of a stream, with the wall-clock times (CLOCK_REALTIME, as `written_at` and the
    kernel's receive timestamps) that decide what its deliveries are."""

    sent_at: float  # its request was sent
    resumed: bool  # with Last-Event-ID
    previous_sent_at: float | None = None  # the connection before it: its request, and when it ended
    previous_ended_at: float | None = None


class Delivery(NamedTuple):
    name: str  # LIVE or REPLAY
    ms: float  # from written_at (live) or from the reconnect's request (replay) to the arrival
    cut: bool  # a replay of an event committed while the previous connection was still open
    since_written_ms: float  # from written_at to the arrival, whatever it is (for a replay: the absence included)


def classify(connection: Connection, written: float, arrived: float) -> Delivery:
    """What one delivered event is, on the connection that delivered it, and its delay."""
    since_written = max(0.0, (arrived - written) * 1000)
    if not connection.resumed or written >= connection.sent_at:
        return Delivery(LIVE, since_written, False, since_written)
    cut = (
        connection.previous_sent_at is not None
        and connection.previous_ended_at is not None
        and connection.previous_sent_at <= written < connection.previous_ended_at
    )
    return Delivery(REPLAY, max(0.0, (arrived - connection.sent_at) * 1000), cut, since_written)


def before_split_counters(deliveries: list[Delivery]) -> dict[str, int]:
    """Every delivery timed from written_at, as all were before the split (a replay's delay then included
    its client's absence), as pacing counters (integers, ms): the replays' p50, p99, max, and the p99 of
    all deliveries together (what the streamers SLO judged before)."""
    together = series(d.since_written_ms for d in deliveries)
    replays = series(d.since_written_ms for d in deliveries if d.name == REPLAY)
    if together is None:
        return {}
    counters = {"sse_all_since_written_p99_ms": round(together.p99_ms)}
    if replays is not None:
        counters |= {
            "sse_replay_since_written_p50_ms": round(replays.p50_ms),
            "sse_replay_since_written_p99_ms": round(replays.p99_ms),
            "sse_replay_since_written_max_ms": round(replays.max_ms),
        }
    return counters


@dataclass(frozen=True)
class Series:
    count: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float

    def text(self) -> str:
        return f"p50 {self.p50_ms:g} / p90 {self.p90_ms:g} / p99 {self.p99_ms:g} ms, max {self.max_ms:g} ms"


def series(values: Iterable[float]) -> Series | None:
    """Exact nearest-rank percentiles (the request log keeps each delay to the microsecond)."""
    ordered = sorted(values)
    if not ordered:
        return None
    return Series(
        count=len(ordered),
        p50_ms=round(timings.nearest_rank(ordered, 0.50), 2),
        p90_ms=round(timings.nearest_rank(ordered, 0.90), 2),
        p99_ms=round(timings.nearest_rank(ordered, 0.99), 2),
        max_ms=round(ordered[-1], 2),
    )


def delivery_figures(rows: Iterable[timings.Row], counters: dict[str, int]) -> dict[str, str]:
    """The summary's lines for live deliveries and replays (nothing when the run delivered no event)."""
    live: list[float] = []
    replays: list[float] = []
    for row in rows:
        if row.name == LIVE:
            live.append(row.ms)
        elif row.name == REPLAY:
            replays.append(row.ms)
    total = len(live) + len(replays)
    if not total:
        return {}
    figures: dict[str, str] = {}
    live_series, replay_series = series(live), series(replays)
    figures["live commit-to-event (connected when the write committed; the p99 goal)"] = (
        f"{live_series.text()} over {live_series.count} deliveries" if live_series else "none"
    )
    share = f"{len(replays)} of {total} deliveries ({len(replays) / total:.2%})"
    cut = counters.get("sse_replays_cut", 0)
    figures["replays after a reconnect (Last-Event-ID; the client was away when the write committed)"] = (
        f"{share}, from the reconnect's request to the event: {replay_series.text()}; {cut} of them committed "
        "while the dropped connection was still open"
        if replay_series
        else share
    )
    if "sse_replay_since_written_p50_ms" in counters:
        figures["the same replays from written_at (the client's absence included: how they counted before)"] = (
            f"p50 {counters['sse_replay_since_written_p50_ms']} / p99 {counters['sse_replay_since_written_p99_ms']} "
            f"ms, max {counters['sse_replay_since_written_max_ms']} ms"
        )
    if "sse_all_since_written_p99_ms" in counters:
        figures["every delivery from written_at, replays included (the measure before the split)"] = (
            f"p99 {counters['sse_all_since_written_p99_ms']} ms"
        )
    return figures


def run_figures(run_dir: Path, counters: dict[str, int]) -> dict[str, str]:
    """delivery_figures of a run directory's request log."""
    return delivery_figures(timings.read_rows(timings.log_paths(run_dir)), counters)
