"""Every request's exact timing: one CSV log per Locust process, HDR histograms and per-second series from them.

Locust rounds the response times it keeps in its statistics (to 2 significant digits above 100 ms, to 10 ms
steps above 1 s), and a distributed run only has the master's merged, rounded tables. So every process that
runs users also appends one row per request to RUN_DIR/requests/<pid>.csv (loadtests/users.py): when it
started (epoch seconds), its type and name, the status, whether it succeeded, the exact response time
(milliseconds to the microsecond) and the cache outcome headers: Nginx's X-Cache-Status and the app's
X-App-Cache (near_hit, hit, not_modified, stale, refresh, miss, bypass).

`analyze(run_dir)` reads every process's log and records the timings, in microseconds, in HdrHistograms (1 us
to 2 min, 3 significant digits: a percentile is within 0.1% of the exact value): the whole run, each request
name and each cache outcome. The SLO percentiles come from these. The per-second series for the plots are
exact nearest-rank percentiles of the requests started in each second. CHECK and SETUP rows (consistency
violations, missing credentials) are failures with no response time: counted, kept out of the latencies.
"""

from __future__ import annotations

import csv
import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from hdrh.histogram import HdrHistogram

LOG_DIR = "requests"  # RUN_DIR/requests/<pid>.csv
LATENCY_FILE = "latency.json"  # what analyze() found, for summary.json and the SLO check
COLUMNS = ("start", "type", "name", "status", "ok", "ms", "edge", "app")
LOWEST_US, HIGHEST_US, DIGITS = 1, 120_000_000, 3
NOT_TIMED = frozenset({"CHECK", "SETUP"})  # Locust events fired by the load test itself, not HTTP requests
EDGE_ANSWERED = frozenset({"HIT", "STALE", "UPDATING", "REVALIDATED"})  # Nginx answered from its microcache
ALL = "all"


def outcome_label(edge: str, app: str, status: int) -> str:
    """One cache outcome per request. Through Nginx, an answer from its microcache is `nginx HIT` (the app's
    header in it is the one stored with the entry, not news); otherwise the app's X-App-Cache value
    (`app hit`, `app miss`, ...), `app -` when the app sent none (an uncached route), `no response`."""
    if status == 0:
        return "no response"
    if edge in EDGE_ANSWERED:
        return f"nginx {edge}"
    return f"app {app or '-'}"


class RequestLog:
    """The writer side (one per Locust process): a buffered CSV, one row per request."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file: IO[str] = path.open("w", newline="", buffering=1 << 20)
        self._writer = csv.writer(self._file)
        self._writer.writerow(COLUMNS)

    def record(
        self, start: float, rtype: str, name: str, status: int, ok: bool, ms: float, edge: str, app: str
    ) -> None:
        self._writer.writerow((f"{start:.6f}", rtype, name, status, 1 if ok else 0, f"{ms:.3f}", edge, app))

    def flush(self) -> None:
        if not self._file.closed:
            self._file.flush()

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


@dataclass(frozen=True)
class Row:
    start: float
    type: str
    name: str
    status: int
    ok: bool
    ms: float
    edge: str
    app: str

    @property
    def timed(self) -> bool:
        return self.type not in NOT_TIMED

    @property
    def outcome(self) -> str:
        return outcome_label(self.edge, self.app, self.status)


def log_paths(run_dir: Path) -> list[Path]:
    return sorted((run_dir / LOG_DIR).glob("*.csv"))


def read_rows(paths: Iterable[Path]) -> Iterator[Row]:
    for path in paths:
        with path.open(newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                continue
            if tuple(header) != COLUMNS:
                raise ValueError(f"{path}: unexpected columns {header}")
            for start, rtype, name, status, ok, ms, edge, app in reader:
                yield Row(float(start), rtype, name, int(status), ok == "1", float(ms), edge, app)


# --- HDR histograms --------------------------------------------------------------------------------------------


def new_histogram() -> HdrHistogram:
    return HdrHistogram(LOWEST_US, HIGHEST_US, DIGITS)


def to_us(ms: float) -> int:
    """A response time in ms as the histogram's unit (us), clamped into its range."""
    return min(HIGHEST_US, max(LOWEST_US, round(ms * 1000)))


def encode(histogram: HdrHistogram) -> str:
    """A histogram as text (HdrHistogram's compressed, base64 encoding), "" when empty."""
    return histogram.encode().decode() if histogram.get_total_count() else ""


def decode(text: str) -> HdrHistogram:
    return HdrHistogram.decode(text.encode()) if text else new_histogram()


@dataclass(frozen=True)
class LatencyStats:
    """Percentiles of one series, in ms (None when nothing was timed)."""

    count: int
    failures: int
    p50_ms: float | None
    p90_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    p999_ms: float | None
    max_ms: float | None
    mean_ms: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LatencyStats:
        values: dict[str, Any] = {k: data.get(k) for k in cls.__dataclass_fields__}
        return cls(**values)


def ms(us: float) -> float:
    """Microseconds as milliseconds, to 4 significant digits (the histogram keeps 3 and reports its bucket top)."""
    return float(f"{us / 1000:.4g}")


def stats_of(histogram: HdrHistogram, failures: int = 0) -> LatencyStats:
    count = int(histogram.get_total_count())
    if not count:
        return LatencyStats(0, failures, None, None, None, None, None, None, None)

    def at(percentile: float) -> float:
        return ms(int(histogram.get_value_at_percentile(percentile)))

    return LatencyStats(
        count=count,
        failures=failures,
        p50_ms=at(50),
        p90_ms=at(90),
        p95_ms=at(95),
        p99_ms=at(99),
        p999_ms=at(99.9),
        max_ms=ms(int(histogram.get_max_value())),
        mean_ms=ms(float(histogram.get_mean_value())),
    )


def nearest_rank(ordered: list[float], fraction: float) -> float:
    """The nearest-rank percentile of an already sorted, non-empty list."""
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


# --- analysis --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Point:
    """One bucket of a series: requests started in [t, t + bucket) seconds after the run's first request."""

    t: float
    count: int
    failures: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None


@dataclass
class Timings:
    start: float  # epoch seconds of the first request
    end: float  # epoch seconds of the last request's start
    bucket_s: float
    overall: LatencyStats
    by_name: dict[str, LatencyStats]
    by_outcome: dict[str, LatencyStats]
    types: dict[str, str]  # request name -> Locust request type (GET, POST, ...)
    pairs: dict[str, int]  # "edge/app" header pairs -> requests, e.g. "MISS/hit"
    not_timed: int  # CHECK and SETUP events (failures without a response time)
    series: dict[str, list[Point]] = field(default_factory=dict)  # "all", "name:<name>", "outcome:<label>"
    histograms: dict[str, str] = field(default_factory=dict)  # series key -> base64 HDR histogram (whole run)

    @property
    def duration_s(self) -> float:
        return max(self.end - self.start, self.bucket_s)

    @property
    def rps(self) -> float:
        return self.overall.count / self.duration_s

    def as_dict(self) -> dict[str, Any]:
        return {
            "start": self.start,
            "end": self.end,
            "bucket_s": self.bucket_s,
            "overall": self.overall.as_dict(),
            "by_name": {k: v.as_dict() for k, v in self.by_name.items()},
            "by_outcome": {k: v.as_dict() for k, v in self.by_outcome.items()},
            "types": self.types,
            "pairs": self.pairs,
            "not_timed": self.not_timed,
            "histograms": self.histograms,
        }


def analyze(run_dir: Path, bucket_s: float = 1.0, write: bool = True) -> Timings | None:
    """Every process's request log of a run, or None when it has none. Writes RUN_DIR/latency.json."""
    paths = log_paths(run_dir)
    if not paths:
        return None
    rows = sorted((r for r in read_rows(paths)), key=lambda r: r.start)
    timings = summarize(rows, bucket_s)
    if timings is not None and write:
        (run_dir / LATENCY_FILE).write_text(json.dumps(timings.as_dict(), indent=1) + "\n")
    return timings


def summarize(rows: list[Row], bucket_s: float = 1.0) -> Timings | None:
    """HDR statistics and per-second series of `rows` (sorted by start or not); None for no rows."""
    if not rows:
        return None
    start = min(r.start for r in rows)
    end = max(r.start for r in rows)
    hists: dict[str, HdrHistogram] = defaultdict(new_histogram)
    failures: Counter[str] = Counter()
    types: dict[str, str] = {}
    pairs: Counter[str] = Counter()
    buckets: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    bucket_failures: dict[str, Counter[int]] = defaultdict(Counter)
    not_timed = 0
    for row in rows:
        if not row.timed:
            not_timed += 1
            continue
        keys = (ALL, f"name:{row.name}", f"outcome:{row.outcome}")
        value = to_us(row.ms)
        index = int((row.start - start) // bucket_s)
        types.setdefault(row.name, row.type)
        pairs[f"{row.edge or '-'}/{row.app or '-'}"] += 1
        for key in keys:
            hists[key].record_value(value)
            buckets[key][index].append(row.ms)
            if not row.ok:
                failures[key] += 1
                bucket_failures[key][index] += 1
    overall = stats_of(hists[ALL], failures[ALL])
    last = int((end - start) // bucket_s)
    series: dict[str, list[Point]] = {}
    for key, by_index in buckets.items():
        points = []
        for index in range(last + 1):
            values = sorted(by_index.get(index, ()))
            pcts = [nearest_rank(values, f) if values else None for f in (0.50, 0.95, 0.99)]
            points.append(Point(index * bucket_s, len(values), bucket_failures[key][index], *pcts))
        series[key] = points

    def grouped(prefix: str) -> dict[str, LatencyStats]:
        found = {k.removeprefix(prefix): stats_of(h, failures[k]) for k, h in hists.items() if k.startswith(prefix)}
        return dict(sorted(found.items(), key=lambda kv: -kv[1].count))

    return Timings(
        start=start,
        end=end,
        bucket_s=bucket_s,
        overall=overall,
        by_name=grouped("name:"),
        by_outcome=grouped("outcome:"),
        types=types,
        pairs=dict(pairs.most_common()),
        not_timed=not_timed,
        series=series,
        histograms={k: encode(h) for k, h in hists.items()},
    )


def load_overall(run_dir: Path) -> LatencyStats | None:
    """The run's whole-run exact figures: latency.json if the runner wrote it, else from the logs, else None."""
    path = run_dir / LATENCY_FILE
    if path.exists():
        return LatencyStats.from_dict(json.loads(path.read_text())["overall"])
    timings = analyze(run_dir)
    return timings.overall if timings is not None else None


def merge_encoded(encoded: Iterable[str]) -> HdrHistogram:
    """One histogram from several base64 HDR histograms (e.g. the same series from several processes)."""
    total = new_histogram()
    for text in encoded:
        if text:
            total.add(decode(text))
    return total
