"""SLO files (loadtests/slo/<scenario>.toml) checked against a run's Locust CSV and pacing ledger.

Usage: python -m loadtests.slo RUN_DIR SLO_FILE   (exit 0: every SLO met; 1: a breach; 2: unusable input)

An SLO file holds, at top level: p95_ms, p99_ms (whole-run percentiles over every request), max_failure_ratio,
min_requests, and two coordinated-omission guards: min_rate_ratio (requests started / arrivals due: below 1
the generator dropped arrivals it could not send) and max_lag_p99_ms (how late requests started against
their scheduled arrival: a generator that keeps up only by sending late measures latency from the wrong
moment); optionally min_not_modified_ratio (pollers: share of conditional polls answered 304); and a
[max_failures] table capping failures per request name (fnmatch patterns, e.g. "consistency: *" = 0); and an
[own_max_ms] table for requests that are slow by design (the sign-in's scrypt, ~100 ms of CPU on purpose): the
requests whose name matches a pattern are left out of the whole-run percentiles and judged on their own slowest
("/auth/token" = 1000). In a short run p99 is the 3rd-worst request: one sign-in per user would otherwise be a
third of it and measure the password hash, not the API.

The percentiles are exact when the run kept its per-request log (loadtests/timings.py: HDR histograms of
every request's response time); only a run without one falls back on Locust's rounded statistics.
"""

from __future__ import annotations

import csv
import fnmatch
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadtests import timings
from loadtests.pacing import load_pacing

CSV_PREFIX = "locust"  # the runner passes --csv RUN_DIR/locust
FINAL_PREFIX = "locust_final"  # the same tables written by loadtests/users.py at exit: Locust's own CSVs lag ~1 s
EXACT, ROUNDED = "exact (HDR, per-request log)", "Locust (rounded)"
_KNOWN_KEYS = {
    "chaos",  # the chaos scenario's own table (loadtests/chaos.py reads it)
    "description",
    "measured",
    "p95_ms",
    "p99_ms",
    "max_failure_ratio",
    "min_rate_ratio",
    "max_lag_p99_ms",
    "min_requests",
    "min_not_modified_ratio",
    "max_failures",
    "own_max_ms",
}


class SloError(ValueError):
    """An SLO file or a run directory that cannot be checked."""


@dataclass(frozen=True)
class Slo:
    p95_ms: float
    p99_ms: float
    max_failure_ratio: float
    min_rate_ratio: float
    max_lag_p99_ms: float
    min_requests: int
    min_not_modified_ratio: float | None = None
    max_failures: dict[str, int] = field(default_factory=dict)
    own_max_ms: dict[str, float] = field(default_factory=dict)
    description: str = ""


def load_slo(path: Path) -> Slo:
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SloError(f"{path}: {exc}") from None
    unknown = set(raw) - _KNOWN_KEYS
    if unknown:
        raise SloError(f"{path}: unknown keys {sorted(unknown)}")
    missing = {"p95_ms", "p99_ms", "max_failure_ratio", "min_rate_ratio", "max_lag_p99_ms", "min_requests"} - set(raw)
    if missing:
        raise SloError(f"{path}: missing keys {sorted(missing)}")
    caps = raw.get("max_failures", {})
    if not isinstance(caps, dict) or not all(isinstance(v, int) and v >= 0 for v in caps.values()):
        raise SloError(f"{path}: [max_failures] maps request-name patterns to counts >= 0")
    own = raw.get("own_max_ms", {})
    if not isinstance(own, dict) or not all(isinstance(v, int | float) and v > 0 for v in own.values()):
        raise SloError(f"{path}: [own_max_ms] maps request-name patterns to milliseconds > 0")
    return Slo(
        p95_ms=float(raw["p95_ms"]),
        p99_ms=float(raw["p99_ms"]),
        max_failure_ratio=float(raw["max_failure_ratio"]),
        min_rate_ratio=float(raw["min_rate_ratio"]),
        max_lag_p99_ms=float(raw["max_lag_p99_ms"]),
        min_requests=int(raw["min_requests"]),
        min_not_modified_ratio=None if "min_not_modified_ratio" not in raw else float(raw["min_not_modified_ratio"]),
        max_failures=dict(caps),
        own_max_ms={k: float(v) for k, v in own.items()},
        description=str(raw.get("description", "")),
    )


@dataclass(frozen=True)
class Measured:
    requests: int
    failures: int
    rps: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    failures_by_name: dict[str, int]
    due: int | None  # arrivals the schedule asked for (pacing ledger)
    started: int | None  # requests the users started
    target_rps: float | None
    lag_p99_ms: float | None
    counters: dict[str, int]
    duration_s: float | None
    harness_errors: int = 0
    percentiles: str = ROUNDED  # where p50/p95/p99/max come from
    own_max_ms: dict[str, float | None] = field(default_factory=dict)  # pattern -> slowest matching request

    @property
    def failure_ratio(self) -> float:
        return self.failures / self.requests if self.requests else 0.0

    @property
    def rate_ratio(self) -> float | None:
        return self.started / self.due if self.due and self.started is not None else None

    @property
    def not_modified_ratio(self) -> float | None:
        polls = self.counters.get("poll_304", 0) + self.counters.get("poll_200", 0)
        return self.counters.get("poll_304", 0) / polls if polls else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "failures": self.failures,
            "failure_ratio": round(self.failure_ratio, 6),
            "rps": self.rps,
            "target_rps": self.target_rps,
            "p50_ms": self.p50_ms,
            "p95_ms": self.p95_ms,
            "p99_ms": self.p99_ms,
            "max_ms": self.max_ms,
            "arrivals_due": self.due,
            "requests_started": self.started,
            "rate_ratio": None if self.rate_ratio is None else round(self.rate_ratio, 4),
            "schedule_lag_p99_ms": self.lag_p99_ms,
            "not_modified_ratio": None if self.not_modified_ratio is None else round(self.not_modified_ratio, 4),
            "duration_s": self.duration_s,
            "harness_errors": self.harness_errors,
            "percentiles": self.percentiles,
            "own_max_ms": self.own_max_ms,
            "failures_by_name": self.failures_by_name,
            "counters": self.counters,
        }


def _number(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None  # "N/A" when nothing was measured


def _history_span(path: Path) -> float | None:
    if not path.exists():
        return None
    with path.open(newline="") as f:
        stamps = [int(row["Timestamp"]) for row in csv.DictReader(f) if row["Name"] == "Aggregated"]
    return float(stamps[-1] - stamps[0]) if len(stamps) > 1 else None


def schedule_span(pacing: dict[str, Any]) -> float | None:
    """Seconds from the first user's schedule start to the last one's stop (the span the target rate is over)."""
    intervals = pacing.get("intervals") or []
    if not intervals:
        return None
    start = min(float(i[0]) for i in intervals)
    stops = [float(i[1]) for i in intervals if i[1] is not None]
    end = max(stops, default=start)
    return round(end - start, 2) if end > start else None


def stats_path(run_dir: Path, table: str = "stats") -> Path:
    """A final table of a run (stats, failures, exceptions): the one written at exit if any, else Locust's CSV."""
    final = run_dir / f"{FINAL_PREFIX}_{table}.csv"
    return final if final.exists() else run_dir / f"{CSV_PREFIX}_{table}.csv"


def _harness_errors(run_dir: Path) -> int:
    """Exceptions raised inside the users (a bug in the load test, not the server): Locust does not count them
    as failed requests, so they are checked on their own."""
    path = stats_path(run_dir, "exceptions")
    if not path.exists():
        return 0
    with path.open(newline="") as f:
        return sum(int(row["Count"]) for row in csv.DictReader(f))


def _apart(run_dir: Path, patterns: list[str]) -> tuple[timings.LatencyStats | None, dict[str, float | None]]:
    """The whole-run figures without the requests named by `patterns`, and each pattern's slowest request,
    from the request log (None, {} without one)."""
    paths = timings.log_paths(run_dir)
    if not paths:
        return None, {}
    rest = timings.new_histogram()
    slowest: dict[str, float | None] = dict.fromkeys(patterns)
    failures = 0
    for row in timings.read_rows(paths):
        if not row.timed:
            continue
        matched = [p for p in patterns if fnmatch.fnmatchcase(row.name, p)]
        for pattern in matched:
            slowest[pattern] = max(slowest[pattern] or 0.0, row.ms)
        if not matched:
            rest.record_value(timings.to_us(row.ms))
            failures += 0 if row.ok else 1
    return timings.stats_of(rest, failures), slowest


def measure(run_dir: Path, own_max: list[str] | None = None) -> Measured:
    """The whole-run figures of a run directory: counts from its final stats table, percentiles from its request
    log (else the stats table), the pacing ledger (pacing.json or the processes' parts), locust exceptions.
    Requests named by `own_max` patterns are left out of the percentiles (their slowest is reported apart)."""
    path = stats_path(run_dir)
    if not path.exists():
        raise SloError(f"{path} is missing: did locust run with --csv {run_dir / CSV_PREFIX}?")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    total = next((row for row in rows if row["Name"] == "Aggregated"), None)
    if total is None:
        raise SloError(f"{path} has no Aggregated row")
    by_name: dict[str, int] = {}
    for row in rows:
        if row["Name"] != "Aggregated" and int(row["Failure Count"]):
            by_name[row["Name"]] = by_name.get(row["Name"], 0) + int(row["Failure Count"])
    pacing = load_pacing(run_dir)
    duration = schedule_span(pacing) or _history_span(run_dir / f"{CSV_PREFIX}_stats_history.csv")
    due = pacing.get("due")
    exact, own = _apart(run_dir, own_max) if own_max else (None, {})
    if exact is None:
        exact = timings.load_overall(run_dir)
    rps = round(float(total["Requests/s"]), 2)
    if exact is not None:
        p50, p95, p99, top, source = exact.p50_ms, exact.p95_ms, exact.p99_ms, exact.max_ms, EXACT
        if duration:  # requests sent over the same span as the target rate
            rps = round(exact.count / duration, 2)
    else:
        p50, p95, p99 = _number(total["50%"]), _number(total["95%"]), _number(total["99%"])
        top, source = _number(total["100%"]), ROUNDED
    return Measured(
        requests=int(total["Request Count"]),
        failures=int(total["Failure Count"]),
        rps=rps,
        p50_ms=p50,
        p95_ms=p95,
        p99_ms=p99,
        max_ms=top,
        failures_by_name=by_name,
        due=due,
        started=pacing.get("started"),
        target_rps=round(due / duration, 2) if due and duration else None,
        lag_p99_ms=pacing.get("lag_p99_ms"),
        counters=pacing.get("counters", {}),
        duration_s=duration,
        harness_errors=_harness_errors(run_dir),
        percentiles=source if not own_max else f"{source}, without {', '.join(own_max)}",
        own_max_ms=own,
    )


@dataclass(frozen=True)
class Check:
    name: str
    limit: str
    measured: str
    ok: bool


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:g} ms"


def check(slo: Slo, m: Measured) -> list[Check]:
    """Every SLO of the file against the measurements; a figure that was not measured fails its check."""
    checks = [
        Check("requests", f">= {slo.min_requests}", str(m.requests), m.requests >= slo.min_requests),
        Check("load-test errors", "= 0 (exceptions in users)", str(m.harness_errors), m.harness_errors == 0),
        Check("p95 latency", f"<= {slo.p95_ms:g} ms", _ms(m.p95_ms), m.p95_ms is not None and m.p95_ms <= slo.p95_ms),
        Check("p99 latency", f"<= {slo.p99_ms:g} ms", _ms(m.p99_ms), m.p99_ms is not None and m.p99_ms <= slo.p99_ms),
        Check(
            "failure ratio",
            f"<= {slo.max_failure_ratio:.4%}",
            f"{m.failure_ratio:.4%} ({m.failures}/{m.requests})",
            m.failure_ratio <= slo.max_failure_ratio,
        ),
    ]
    ratio = m.rate_ratio
    checks.append(
        Check(
            "achieved/target rate",
            f">= {slo.min_rate_ratio:.0%}",
            "n/a (no pacing ledger)" if ratio is None else f"{ratio:.1%} ({m.started}/{m.due} arrivals)",
            ratio is not None and ratio >= slo.min_rate_ratio,
        )
    )
    lag = m.lag_p99_ms
    checks.append(
        Check(
            "schedule lag p99",
            f"<= {slo.max_lag_p99_ms:g} ms",
            _ms(lag),
            lag is not None and lag <= slo.max_lag_p99_ms,
        )
    )
    for pattern, limit in slo.own_max_ms.items():
        top = m.own_max_ms.get(pattern)
        checks.append(Check(f"slowest '{pattern}' (apart)", f"<= {limit:g} ms", _ms(top), top is None or top <= limit))
    for pattern, cap in slo.max_failures.items():
        count = sum(n for name, n in m.failures_by_name.items() if fnmatch.fnmatchcase(name, pattern))
        checks.append(Check(f"failures '{pattern}'", f"<= {cap}", str(count), count <= cap))
    if slo.min_not_modified_ratio is not None:
        nm = m.not_modified_ratio
        checks.append(
            Check(
                "304 share of polls",
                f">= {slo.min_not_modified_ratio:.0%}",
                "n/a (no polls)" if nm is None else f"{nm:.1%}",
                nm is not None and nm >= slo.min_not_modified_ratio,
            )
        )
    return checks


def render_table(checks: list[Check]) -> str:
    header = ("SLO", "target", "measured", "result")
    rows = [(c.name, c.limit, c.measured, "ok" if c.ok else "BREACH") for c in checks]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join("-" * w for w in widths)
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)), line]
    out += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(out)


def evaluate(run_dir: Path, slo_path: Path) -> tuple[bool, list[Check], Measured]:
    loaded = load_slo(slo_path)
    m = measure(run_dir, list(loaded.own_max_ms))
    checks = check(loaded, m)
    return all(c.ok for c in checks), checks, m


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m loadtests.slo RUN_DIR SLO_FILE", file=sys.stderr)
        return 2
    try:
        ok, checks, _ = evaluate(Path(args[0]), Path(args[1]))
    except SloError as exc:
        print(f"slo: {exc}", file=sys.stderr)
        return 2
    print(render_table(checks))
    print("SLOs met" if ok else "SLO BREACH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
