"""A run's figures: throughput and latency plots from Locust's stats history, and summary.json / summary.md.

Plots use matplotlib's object API on the Agg canvas (no display, no pyplot global state):

- throughput.png: requests/s per history interval (and a 5 s mean), failures/s, the target rate the schedule
  asked for (from pacing.json), and the user count;
- latency.png: p50 / p95 / p99 over time. Locust computes these over a sliding window of about 10 s, so a
  spike shows up smeared over that window.
"""

from __future__ import annotations

import csv
import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from loadtests.pacing import target_rate_at
from loadtests.slo import CSV_PREFIX, PACING_FILE, Check, Measured, stats_path

SMOOTHING_S = 5


@dataclass(frozen=True)
class HistoryRow:
    timestamp: int
    users: int
    requests: int  # cumulative
    failures: int  # cumulative
    p50: float | None
    p95: float | None
    p99: float | None


def _maybe(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None


def read_history(path: Path) -> list[HistoryRow]:
    """The Aggregated rows of a Locust stats_history CSV, one per distinct second, in time order."""
    rows: dict[int, HistoryRow] = {}
    with path.open(newline="") as f:
        for raw in csv.DictReader(f):
            if raw["Name"] != "Aggregated":
                continue
            row = HistoryRow(
                timestamp=int(raw["Timestamp"]),
                users=int(raw["User Count"]),
                requests=int(raw["Total Request Count"]),
                failures=int(raw["Total Failure Count"]),
                p50=_maybe(raw["50%"]),
                p95=_maybe(raw["95%"]),
                p99=_maybe(raw["99%"]),
            )
            rows[row.timestamp] = row  # two rows in one second: keep the later
    return [rows[t] for t in sorted(rows)]


def throughput_series(rows: Sequence[HistoryRow]) -> tuple[list[float], list[float], list[float]]:
    """(seconds since the first row, requests/s, failures/s) for each interval between consecutive rows."""
    times, rps, fps = [], [], []
    for prev, cur in itertools.pairwise(rows):
        dt = cur.timestamp - prev.timestamp
        times.append(float(cur.timestamp - rows[0].timestamp))
        rps.append((cur.requests - prev.requests) / dt)
        fps.append((cur.failures - prev.failures) / dt)
    return times, rps, fps


def _rolling_mean(values: Sequence[float], window: int) -> list[float]:
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def render_plots(run_dir: Path, title: str) -> list[Path]:
    """throughput.png and latency.png in `run_dir`, from its stats history (and pacing.json when present)."""
    rows = read_history(run_dir / f"{CSV_PREFIX}_stats_history.csv")
    if len(rows) < 2:
        raise ValueError(f"{run_dir}: fewer than two stats-history rows; nothing to plot")
    start = rows[0].timestamp
    times, rps, fps = throughput_series(rows)
    intervals = []
    if (run_dir / PACING_FILE).exists():
        intervals = json.loads((run_dir / PACING_FILE).read_text()).get("intervals", [])

    fig = Figure(figsize=(10, 5), dpi=110, layout="constrained")
    ax = fig.add_subplot()
    ax.plot(times, rps, color="tab:blue", alpha=0.35, linewidth=1, label="requests/s (per interval)")
    smooth = _rolling_mean(rps, SMOOTHING_S)
    ax.plot(times, smooth, color="tab:blue", linewidth=2, label=f"requests/s ({SMOOTHING_S} s mean)")
    if intervals:
        target = [target_rate_at(intervals, start + t) for t in times]
        ax.plot(times, target, color="black", linestyle="--", linewidth=1.5, label="target rate (schedule)")
    ax.plot(times, fps, color="tab:red", linewidth=1.5, label="failures/s")
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("requests per second")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    users_ax = ax.twinx()
    users = ([r.timestamp - start for r in rows], [r.users for r in rows])
    users_ax.step(*users, where="post", color="tab:gray", alpha=0.5, linestyle=":", label="users (right axis)")
    users_ax.set_ylabel("users", color="tab:gray")
    users_ax.set_ylim(bottom=0, top=max(users[1]) * 1.15 + 1)
    handles, labels = ax.get_legend_handles_labels()
    more_handles, more_labels = users_ax.get_legend_handles_labels()
    ax.legend(handles + more_handles, labels + more_labels, loc="lower center", fontsize="small", ncols=3)
    ax.set_title(f"{title}: throughput")
    throughput_png = run_dir / "throughput.png"
    fig.savefig(throughput_png)

    fig = Figure(figsize=(10, 5), dpi=110, layout="constrained")
    ax = fig.add_subplot()
    for attr, color in (("p50", "tab:green"), ("p95", "tab:orange"), ("p99", "tab:red")):
        # Rows before the first request, or before Locust's window has data (all zeros), have no percentiles.
        measured = [r for r in rows if r.requests and r.p99]
        points = [(r.timestamp - start, getattr(r, attr)) for r in measured if getattr(r, attr) is not None]
        ax.plot([p[0] for p in points], [p[1] for p in points], color=color, linewidth=1.5, label=attr)
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("response time (ms, ~10 s sliding window)")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper right", fontsize="small")
    ax.set_title(f"{title}: latency percentiles")
    latency_png = run_dir / "latency.png"
    fig.savefig(latency_png)
    return [throughput_png, latency_png]


def endpoint_rows(run_dir: Path) -> list[dict[str, Any]]:
    """Per request name: type, count, failures, p50/p95/p99 (ms), from the final stats CSV."""
    with stats_path(run_dir).open(newline="") as f:
        rows = list(csv.DictReader(f))
    return [
        {
            "type": row["Type"],
            "name": row["Name"],
            "requests": int(row["Request Count"]),
            "failures": int(row["Failure Count"]),
            "rps": _maybe(row["Requests/s"]),
            "p50_ms": _maybe(row["50%"]),
            "p95_ms": _maybe(row["95%"]),
            "p99_ms": _maybe(row["99%"]),
        }
        for row in rows
    ]


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    return f"{value:g}" if isinstance(value, float) else str(value)


def write_summary(
    run_dir: Path, meta: dict[str, Any], ok: bool, checks: list[Check], measured: Measured, plots: list[Path]
) -> tuple[Path, Path]:
    """summary.json (everything, machine-readable) and summary.md (the same, for people)."""
    endpoints = endpoint_rows(run_dir)
    pacing = json.loads((run_dir / PACING_FILE).read_text()) if (run_dir / PACING_FILE).exists() else {}
    data = {
        **meta,
        "slo_met": ok,
        "checks": [c.__dict__ for c in checks],
        "measured": measured.as_dict(),
        "pacing_by_class": pacing.get("classes", {}),
        "endpoints": endpoints,
        "plots": [p.name for p in plots],
    }
    json_path = run_dir / "summary.json"
    json_path.write_text(json.dumps(data, indent=2, default=str) + "\n")

    m = measured
    lines = [
        f"# Load test `{meta.get('scenario', '?')}`: {'SLOs met' if ok else 'SLO BREACH'}",
        "",
        f"- command: `{meta.get('command', '')}`",
        f"- target: {meta.get('target', '')} ({meta.get('started_at', '')}, git {meta.get('git_rev', '?')})",
        f"- requests: {m.requests} in {_fmt(m.duration_s)} s, {m.rps:g} req/s achieved vs {_fmt(m.target_rps)} req/s "
        f"target; failures {m.failures} ({m.failure_ratio:.3%})",
        f"- latency: p50 {_fmt(m.p50_ms)} ms, p95 {_fmt(m.p95_ms)} ms, p99 {_fmt(m.p99_ms)} ms, "
        f"max {_fmt(m.max_ms)} ms",
        f"- schedule: {_fmt(m.started)} of {_fmt(m.due)} arrivals started, lag p99 {_fmt(m.lag_p99_ms)} ms",
    ]
    for key, value in meta.get("extra", {}).items():
        lines.append(f"- {key}: {value}")
    lines += ["", "| SLO | target | measured | result |", "|---|---|---|---|"]
    lines += [f"| {c.name} | {c.limit} | {c.measured} | {'ok' if c.ok else '**BREACH**'} |" for c in checks]
    lines += ["", "| type | name | requests | failures | p50 | p95 | p99 |", "|---|---|---:|---:|---:|---:|---:|"]
    lines += [
        f"| {e['type']} | {e['name']} | {e['requests']} | {e['failures']} | {_fmt(e['p50_ms'])} | "
        f"{_fmt(e['p95_ms'])} | {_fmt(e['p99_ms'])} |"
        for e in endpoints
    ]
    lines += ["", *[f"![{p.stem}]({p.name})" for p in plots], ""]
    md_path = run_dir / "summary.md"
    md_path.write_text("\n".join(lines))
    return json_path, md_path
