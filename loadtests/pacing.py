"""Open-model pacing: every simulated user sends one request per arrival of its own schedule.

Arrivals come at a fixed mean rate per user (Poisson by default: exponential gaps), on an absolute
schedule: a slow response does not push the following arrivals later, so the generator cannot quietly
slow down with the server (coordinated omission). A user that falls behind sends back-to-back until it
catches up; arrivals more than `max_backlog` seconds late are dropped and counted as omitted. The ledger
then compares arrivals that were due with requests actually started: that ratio is the rate SLO.

Each Locust process that runs users keeps its own ledger and writes it to RUN_DIR/parts/pacing-<pid>.json;
`load_pacing` merges the parts of a distributed run (sums, and the schedule lags through HDR histograms).
`rate_scale` turns a total offered rate into a factor on the per-user rates of a mix.

Pure Python (time and randomness injected) so tests can drive it without locust.
"""

from __future__ import annotations

import json
import math
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadtests.timings import encode, merge_encoded, new_histogram

PACING_FILE = "pacing.json"  # the merged ledger of a run (what the SLO check reads)
PARTS_DIR = "parts"  # RUN_DIR/parts/pacing-<pid>.json: one ledger per Locust process that ran users
Clock = Callable[[], float]
MAX_BACKLOG = 5.0  # seconds: beyond this a late arrival is dropped (a real client would have given up)


@dataclass
class Pacer:
    """One user's arrival schedule. `begin()` once, then `wait()` after every request; `stop()` at the end."""

    rate: float  # arrivals per second
    rng: random.Random = field(default_factory=random.Random)
    poisson: bool = True
    max_backlog: float = MAX_BACKLOG
    clock: Clock = time.monotonic
    wall: Clock = time.time
    started: float | None = None  # monotonic
    stopped: float | None = None
    started_wall: float | None = None
    stopped_wall: float | None = None
    next_due: float = 0.0  # the arrival the user is waiting for, or serving
    finished: int = 0  # requests that completed (wait() calls)
    omitted: int = 0  # arrivals dropped for being more than max_backlog late
    lags: list[float] = field(default_factory=list)  # per served arrival: how late it started (s)

    def __post_init__(self) -> None:
        if self.rate <= 0:
            raise ValueError("the rate must be > 0 requests/s")

    def _gap(self) -> float:
        return self.rng.expovariate(self.rate) if self.poisson else 1.0 / self.rate

    def begin(self) -> float:
        """Start the schedule; returns the delay before the first arrival (a random phase, so users spread)."""
        now = self.clock()
        self.started, self.started_wall = now, self.wall()
        self.next_due = now + (self._gap() if self.poisson else self.rng.random() / self.rate)
        return self.next_due - now

    def wait(self) -> float:
        """The request for `next_due` finished: schedule the next arrival; returns how long to sleep for it."""
        if self.started is None:
            raise RuntimeError("Pacer.wait() before begin()")
        now = self.clock()
        self.finished += 1
        self.next_due += self._gap()
        while now - self.next_due > self.max_backlog:
            self.omitted += 1
            self.next_due += self._gap()
        self.lags.append(max(0.0, now - self.next_due))
        return max(0.0, self.next_due - now)

    def stop(self) -> None:
        if self.stopped is None:
            self.stopped, self.stopped_wall = self.clock(), self.wall()

    def counts(self, until: float | None = None) -> tuple[int, int]:
        """(arrivals due, requests started) from begin() to `until` (default: stop, else now).

        The arrival being served (or slept for) counts as started once it is due; arrivals that came due
        while the user was still busy and were not sent yet count as due only: the shortfall.
        """
        if self.started is None:
            return 0, 0
        end = until if until is not None else self.stopped if self.stopped is not None else self.clock()
        started = self.finished + (1 if self.next_due <= end else 0)
        due = self.finished + self.omitted
        if self.next_due <= end:  # that arrival, plus those expected while it was being served
            due += 1 + int((end - self.next_due) * self.rate)
        return due, started


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


def lag_histogram_text(lags: Sequence[float]) -> str:
    """Schedule lags (s) as a base64 HDR histogram of microseconds (to merge the ledgers of several processes)."""
    histogram = new_histogram()
    for lag in lags:
        histogram.record_value(max(0, min(round(lag * 1_000_000), histogram.highest_trackable_value)))
    return encode(histogram)


class PacingLedger:
    """Every pacer of the process by user class, plus named counters (e.g. poll outcomes)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.pacers: list[tuple[str, Pacer]] = []
        self.counters: dict[str, int] = {}

    def add(self, user_class: str, pacer: Pacer) -> Pacer:
        with self._lock:
            self.pacers.append((user_class, pacer))
        return pacer

    def count(self, name: str, increment: int = 1) -> None:
        with self._lock:
            self.counters[name] = self.counters.get(name, 0) + increment

    def summary(self, until: float | None = None) -> dict[str, Any]:
        """Per class and in total: arrivals due, requests started, their ratio, omitted, lag p50/p99/max;
        and the target-rate timeline as (start, stop, rate) intervals in wall-clock seconds."""
        classes: dict[str, dict[str, Any]] = {}
        all_lags: list[float] = []
        intervals: list[tuple[float, float | None, float]] = []
        for name, pacer in self.pacers:
            if pacer.started is None:
                continue
            due, started = pacer.counts(until)
            entry = classes.setdefault(name, {"users": 0, "rate_per_user": pacer.rate, "due": 0, "started": 0})
            entry["users"] += 1
            entry["due"] += due
            entry["started"] += started
            entry["omitted"] = entry.get("omitted", 0) + pacer.omitted
            entry.setdefault("_lags", []).extend(pacer.lags)
            all_lags.extend(pacer.lags)
            assert pacer.started_wall is not None
            intervals.append((pacer.started_wall, pacer.stopped_wall, pacer.rate))
        for entry in classes.values():
            lags = entry.pop("_lags")
            entry["ratio"] = round(entry["started"] / entry["due"], 4) if entry["due"] else None
            entry["lag_p99_ms"] = round(percentile(lags, 0.99) * 1000, 1)
            entry["lag_hdr"] = lag_histogram_text(lags)
        due = sum(e["due"] for e in classes.values())
        started = sum(e["started"] for e in classes.values())
        return {
            "due": due,
            "started": started,
            "ratio": round(started / due, 4) if due else None,
            "omitted": sum(e["omitted"] for e in classes.values()),
            "lag_p50_ms": round(percentile(all_lags, 0.50) * 1000, 1),
            "lag_p99_ms": round(percentile(all_lags, 0.99) * 1000, 1),
            "lag_max_ms": round(max(all_lags, default=0.0) * 1000, 1),
            "classes": classes,
            "intervals": intervals,
            "counters": dict(self.counters),
            "lag_hdr": lag_histogram_text(all_lags),
        }

    def write(self, path: Path, until: float | None = None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.summary(until), indent=2) + "\n")


def target_rate_at(intervals: Sequence[Sequence[Any]], t: float) -> float:
    """Requests/s the schedule asked for at wall-clock second `t` (sum of the rates of users active then)."""
    return sum(rate for start, stop, rate in intervals if start <= t and (stop is None or t < stop))


def merge(parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One ledger summary from the summaries of several processes: counts summed, intervals joined, schedule
    lag percentiles from the merged lag histograms (HDR: within 0.1% of the exact value)."""

    def lag_ms(histogram_texts: Sequence[str]) -> dict[str, float]:
        merged = merge_encoded(histogram_texts)
        if not merged.get_total_count():
            return {"p50": 0.0, "p99": 0.0, "max": 0.0}
        return {
            "p50": round(merged.get_value_at_percentile(50) / 1000, 1),
            "p99": round(merged.get_value_at_percentile(99) / 1000, 1),
            "max": round(merged.get_max_value() / 1000, 1),
        }

    classes: dict[str, dict[str, Any]] = {}
    class_lags: dict[str, list[str]] = {}
    counters: dict[str, int] = {}
    for part in parts:
        for name, entry in part.get("classes", {}).items():
            merged = classes.setdefault(
                name, {"users": 0, "rate_per_user": entry["rate_per_user"], "due": 0, "started": 0, "omitted": 0}
            )
            for key in ("users", "due", "started", "omitted"):
                merged[key] += entry.get(key, 0)
            class_lags.setdefault(name, []).append(entry.get("lag_hdr", ""))
        for name, value in part.get("counters", {}).items():
            counters[name] = counters.get(name, 0) + value
    for name, entry in classes.items():
        entry["ratio"] = round(entry["started"] / entry["due"], 4) if entry["due"] else None
        entry["lag_p99_ms"] = lag_ms(class_lags[name])["p99"]
        entry["lag_hdr"] = encode(merge_encoded(class_lags[name]))
    due = sum(p.get("due", 0) for p in parts)
    started = sum(p.get("started", 0) for p in parts)
    lags = lag_ms([p.get("lag_hdr", "") for p in parts])
    return {
        "due": due,
        "started": started,
        "ratio": round(started / due, 4) if due else None,
        "omitted": sum(p.get("omitted", 0) for p in parts),
        "lag_p50_ms": lags["p50"],
        "lag_p99_ms": lags["p99"],
        "lag_max_ms": lags["max"],
        "classes": classes,
        "intervals": [interval for p in parts for interval in p.get("intervals", [])],
        "counters": counters,
        "lag_hdr": encode(merge_encoded([p.get("lag_hdr", "") for p in parts])),
        "processes": len(parts),
    }


def part_path(run_dir: Path, pid: int) -> Path:
    return run_dir / PARTS_DIR / f"pacing-{pid}.json"


def load_pacing(run_dir: Path, write: bool = False) -> dict[str, Any]:
    """The run's ledger: pacing.json when present, else the merged parts ({} when neither exists); `write`
    saves a merge as pacing.json."""
    path = run_dir / PACING_FILE
    if path.exists():
        data: dict[str, Any] = json.loads(path.read_text())
        return data
    parts = [json.loads(p.read_text()) for p in sorted((run_dir / PARTS_DIR).glob("pacing-*.json"))]
    if not parts:
        return {}
    merged = merge(parts)
    if write:
        path.write_text(json.dumps(merged, indent=2) + "\n")
    return merged


def rate_scale(offered: float, users: int, classes: Sequence[tuple[int, int, float]]) -> float:
    """The factor on the per-user rates of the weighted user classes that makes `users` users offer `offered`
    requests/s in all. `classes`: (weight, fixed_count, rate per user) per class. Fixed-count classes (writers,
    checkers) keep their rate: the read mix scales around them. Users split by weight as Locust splits them
    (so the result is exact when the weights divide the weighted users evenly)."""
    if offered <= 0 or users <= 0:
        raise ValueError("the offered rate and the users must be > 0")
    fixed_users = sum(fixed for _, fixed, _ in classes if fixed)
    fixed_rate = sum(fixed * rate for _, fixed, rate in classes if fixed)
    weighted = [(weight, rate) for weight, fixed, rate in classes if not fixed and weight > 0]
    weighted_users = users - fixed_users
    if not weighted or weighted_users <= 0:
        raise ValueError("no weighted user class to scale (or fewer users than the fixed-count classes take)")
    mean_rate = sum(w * r for w, r in weighted) / sum(w for w, _ in weighted)
    base = weighted_users * mean_rate
    if offered <= fixed_rate:
        raise ValueError(f"the fixed-count classes alone send {fixed_rate:g} req/s, more than {offered:g}")
    return (offered - fixed_rate) / base
