"""A run's figures: plots, summary.json and summary.md.

Plots use matplotlib's object API on the Agg canvas (no display, no pyplot global state). With the run's
request log (loadtests/timings.py) every series is exact and per second, by the second each request started:

- throughput.png: requests/s and failures/s, the target rate the schedule asked for as a step line over time
  (the sum of the rates of the users running at each moment, from the pacing ledger), and the user count;
- latency.png: p50 / p95 / p99 per second, with the SLO limits drawn;
- endpoints.png, outcomes.png: requests/s (stacked) and p99 per second for each request name and for each
  cache outcome (Nginx's X-Cache-Status, the app's X-App-Cache), with the p99 SLO limit;
- cpu.png: CPU cores per process group (app, postgres, redis, nginx, generator, others, steal) over time.

Without a request log (runs from before it existed) throughput.png and latency.png come from Locust's stats
history, whose percentiles are rounded and computed over a ~10 s sliding window.
"""

from __future__ import annotations

import csv
import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from loadtests.cpu import GENERATOR_FLAG, Attribution, Usage
from loadtests.pacing import load_pacing, target_rate_at
from loadtests.slo import CSV_PREFIX, Check, Measured, Slo, stats_path
from loadtests.timings import ALL, Point, Timings

SMOOTHING_S = 5
TOP_SERIES = 8  # per-endpoint / per-outcome plots: the busiest series, the rest summed as "other"
CPU_COLORS = {
    "app": "tab:blue",
    "postgres": "tab:purple",
    "redis": "tab:red",
    "nginx": "tab:green",
    "generator": "tab:orange",
    "others": "tab:gray",
    "steal": "black",
}


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
    if not path.exists():
        return []
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


def target_steps(intervals: Sequence[Sequence[Any]], start: float, end: float) -> tuple[list[float], list[float]]:
    """The schedule's target rate as a step function: (seconds since `start`, rate from then on) at every moment
    a user started or stopped, clipped to [start, end]."""
    moments = {start, end}
    for begin, stop, _ in intervals:
        moments.add(float(begin))
        if stop is not None:
            moments.add(float(stop))
    points = sorted(t for t in moments if start <= t <= end)
    return [t - start for t in points], [target_rate_at(intervals, t) for t in points]


def _slo_lines(ax: Axes, slo: Slo | None, which: Sequence[str] = ("p95", "p99")) -> None:
    if slo is None:
        return
    if "p95" in which:
        ax.axhline(slo.p95_ms, color="tab:orange", linestyle="--", linewidth=1, label=f"p95 SLO {slo.p95_ms:g} ms")
    if "p99" in which:
        ax.axhline(slo.p99_ms, color="tab:red", linestyle="--", linewidth=1, label=f"p99 SLO {slo.p99_ms:g} ms")


def _new_figure(rows: int = 1, height: float = 5) -> tuple[Figure, list[Axes]]:
    fig = Figure(figsize=(10, height), dpi=110, layout="constrained")
    axes = fig.subplots(rows, 1, sharex=True, squeeze=False)
    return fig, [a for row in axes for a in row]


def _plot_throughput(
    run_dir: Path, title: str, rows: Sequence[HistoryRow], timings: Timings | None
) -> tuple[Path, float]:
    """throughput.png; returns it and the wall-clock second its x axis starts at."""
    if timings is not None:
        start = timings.start
        points = timings.series[ALL]
        times = [p.t for p in points]
        rps = [p.count / timings.bucket_s for p in points]
        fps = [p.failures / timings.bucket_s for p in points]
        end = start + times[-1] + timings.bucket_s
        source = "started per second, request log"
    else:
        start = float(rows[0].timestamp)
        times, rps, fps = throughput_series(rows)
        end = float(rows[-1].timestamp)
        source = "per history interval"
    fig, (ax,) = _new_figure()
    ax.plot(times, rps, color="tab:blue", alpha=0.35, linewidth=1, label=f"requests/s ({source})")
    ax.plot(
        times,
        _rolling_mean(rps, SMOOTHING_S),
        color="tab:blue",
        linewidth=2,
        label=f"requests/s ({SMOOTHING_S} s mean)",
    )
    intervals = load_pacing(run_dir).get("intervals", [])
    if intervals:
        t, target = target_steps(intervals, start, end)
        ax.step(t, target, where="post", color="black", linestyle="--", linewidth=1.5, label="target rate (schedule)")
    ax.plot(times, fps, color="tab:red", linewidth=1.5, label="failures/s")
    ax.set_xlabel("seconds since the first request" if timings else "seconds since start")
    ax.set_ylabel("requests per second")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if rows:
        users_ax = ax.twinx()
        users_ax.step(
            [r.timestamp - start for r in rows],
            [r.users for r in rows],
            where="post",
            color="tab:gray",
            alpha=0.5,
            linestyle=":",
            label="users (right axis)",
        )
        users_ax.set_ylabel("users", color="tab:gray")
        users_ax.set_ylim(bottom=0, top=max(r.users for r in rows) * 1.15 + 1)
        more_handles, more_labels = users_ax.get_legend_handles_labels()
        handles, labels = handles + more_handles, labels + more_labels
    ax.legend(handles, labels, loc="lower center", fontsize="small", ncols=3)
    ax.set_title(f"{title}: throughput")
    path = run_dir / "throughput.png"
    fig.savefig(path)
    return path, start


def _plot_latency(
    run_dir: Path, title: str, rows: Sequence[HistoryRow], timings: Timings | None, slo: Slo | None
) -> Path:
    fig, (ax,) = _new_figure()
    for attr, color in (("p50", "tab:green"), ("p95", "tab:orange"), ("p99", "tab:red")):
        if timings is not None:
            got = [(p.t, getattr(p, f"{attr}_ms")) for p in timings.series[ALL]]
        else:  # rows before the first request, or before Locust's window has data (zeros), have no percentiles
            got = [(r.timestamp - rows[0].timestamp, getattr(r, attr)) for r in rows if r.requests and r.p99]
        points = [(t, v) for t, v in got if v is not None]
        ax.plot([p[0] for p in points], [p[1] for p in points], color=color, linewidth=1.5, label=attr)
    _slo_lines(ax, slo)
    if timings is not None:
        ax.set_xlabel("seconds since the first request")
        ax.set_ylabel("response time (ms; exact, requests started in each second)")
    else:
        ax.set_xlabel("seconds since start")
        ax.set_ylabel("response time (ms, ~10 s sliding window)")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper right", fontsize="small")
    ax.set_title(f"{title}: latency percentiles")
    path = run_dir / "latency.png"
    fig.savefig(path)
    return path


def _plot_breakdown(
    run_dir: Path, title: str, timings: Timings, prefix: str, what: str, filename: str, slo: Slo | None
) -> Path:
    """requests/s stacked and p99 per second for each series under `prefix` (name: or outcome:)."""
    keys = [k for k in timings.series if k.startswith(prefix)]
    keys.sort(key=lambda k: -sum(p.count for p in timings.series[k]))
    top, rest = keys[:TOP_SERIES], keys[TOP_SERIES:]
    times = [p.t for p in timings.series[ALL]]
    fig, (ax_rps, ax_p99) = _new_figure(2, 8)
    stacks = [[p.count / timings.bucket_s for p in timings.series[k]] for k in top]
    labels = [k.removeprefix(prefix) for k in top]
    if rest:
        stacks.append([sum(timings.series[k][i].count for k in rest) / timings.bucket_s for i in range(len(times))])
        labels.append(f"{len(rest)} others")
    ax_rps.stackplot(times, stacks, labels=labels, alpha=0.8)
    ax_rps.set_ylabel("requests/s (stacked)")
    ax_rps.set_ylim(bottom=0)
    ax_rps.legend(loc="upper left", fontsize="x-small", ncols=2)
    ax_rps.set_title(f"{title}: by {what}")
    for key in top:
        points: list[Point] = [p for p in timings.series[key] if p.p99_ms is not None]
        ax_p99.plot(
            [p.t for p in points], [p.p99_ms or 0.0 for p in points], linewidth=1.2, label=key.removeprefix(prefix)
        )
    _slo_lines(ax_p99, slo, ("p99",))
    ax_p99.set_yscale("log")
    ax_p99.set_ylabel("p99 per second (ms, exact, log)")
    ax_p99.set_xlabel("seconds since the first request")
    ax_p99.legend(loc="upper left", fontsize="x-small", ncols=2)
    for ax in (ax_rps, ax_p99):
        ax.grid(True, alpha=0.3)
    path = run_dir / filename
    fig.savefig(path)
    return path


def _plot_cpu(
    run_dir: Path, title: str, cpu_timeline: Sequence[tuple[float, dict[str, float]]], start: float, ncpu: int | None
) -> Path:
    fig, (ax,) = _new_figure()
    times = [wall - start for wall, _ in cpu_timeline]
    names = [n for n in CPU_COLORS if any(n in row for _, row in cpu_timeline)]
    stacks = [[row.get(n, 0.0) for _, row in cpu_timeline] for n in names]
    ax.stackplot(times, stacks, labels=names, colors=[CPU_COLORS[n] for n in names], alpha=0.75, step="pre")
    if ncpu:
        ax.axhline(ncpu, color="black", linestyle="--", linewidth=1, label=f"{ncpu} cores")
    ax.set_xlabel("seconds since the first request")
    ax.set_ylabel("CPU cores (from /proc, per sample)")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", fontsize="small", ncols=4)
    ax.set_title(f"{title}: CPU by process group")
    path = run_dir / "cpu.png"
    fig.savefig(path)
    return path


def render_plots(
    run_dir: Path,
    title: str,
    slo: Slo | None = None,
    timings: Timings | None = None,
    cpu_timeline: Sequence[tuple[float, dict[str, float]]] | None = None,
    ncpu: int | None = None,
) -> list[Path]:
    """The run's PNGs (see the module docstring): throughput and latency always; endpoints and outcomes with a
    request log; cpu with a CPU timeline."""
    rows = read_history(run_dir / f"{CSV_PREFIX}_stats_history.csv")
    if timings is None and len(rows) < 2:
        raise ValueError(f"{run_dir}: fewer than two stats-history rows and no request log; nothing to plot")
    throughput, start = _plot_throughput(run_dir, title, rows, timings)
    plots = [throughput, _plot_latency(run_dir, title, rows, timings, slo)]
    if timings is not None:
        plots.append(_plot_breakdown(run_dir, title, timings, "name:", "endpoint", "endpoints.png", slo))
        plots.append(_plot_breakdown(run_dir, title, timings, "outcome:", "cache outcome", "outcomes.png", slo))
    if cpu_timeline:
        plots.append(_plot_cpu(run_dir, title, cpu_timeline, start, ncpu))
    return plots


# --- summary ---------------------------------------------------------------------------------------------------


def endpoint_rows(run_dir: Path, timings: Timings | None = None) -> list[dict[str, Any]]:
    """Per request name: type, count, failures, req/s, p50/p95/p99 (ms). Exact (request log) when given timings,
    with the Aggregated row from them too; else Locust's final stats CSV (rounded)."""
    with stats_path(run_dir).open(newline="") as f:
        rows = list(csv.DictReader(f))
    if timings is None:
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
    duration = timings.duration_s
    out = []
    for name, stats in [*timings.by_name.items(), ("Aggregated", timings.overall)]:
        out.append(
            {
                "type": timings.types.get(name, ""),
                "name": name,
                "requests": stats.count,
                "failures": stats.failures,
                "rps": round(stats.count / duration, 2),
                "p50_ms": stats.p50_ms,
                "p95_ms": stats.p95_ms,
                "p99_ms": stats.p99_ms,
                "p999_ms": stats.p999_ms,
                "max_ms": stats.max_ms,
            }
        )
    checks = [row for row in rows if row["Type"] in ("CHECK", "SETUP")]  # failures without a response time
    out[-1:-1] = [
        {
            "type": row["Type"],
            "name": row["Name"],
            "requests": int(row["Request Count"]),
            "failures": int(row["Failure Count"]),
            "rps": None,
            "p50_ms": None,
            "p95_ms": None,
            "p99_ms": None,
        }
        for row in checks
    ]
    return out


def outcome_rows(timings: Timings) -> list[dict[str, Any]]:
    total = timings.overall.count or 1
    return [
        {
            "outcome": name,
            "requests": s.count,
            "share": round(s.count / total, 4),
            "p50_ms": s.p50_ms,
            "p95_ms": s.p95_ms,
            "p99_ms": s.p99_ms,
            "max_ms": s.max_ms,
        }
        for name, s in timings.by_outcome.items()
    ]


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    return f"{value:g}" if isinstance(value, float) else str(value)


def generator_note(usage: Usage | None) -> str | None:
    """The generator flag of every report: its busiest process above GENERATOR_FLAG of a core."""
    if usage is None or "generator" not in usage.groups:
        return None
    g = usage.groups["generator"]
    if g.busiest_cores > GENERATOR_FLAG:
        return (
            f"**GENERATOR CPU {g.busiest_cores:.0%}** of a core (Locust pid {g.busiest_pid}): the load generator may "
            "have limited this run and its latencies; run with more --processes"
        )
    return f"generator CPU: busiest Locust process {g.busiest_cores:.0%} of a core ({g.processes} processes)"


def cpu_lines(usage: Usage, attribution: Attribution | None) -> list[str]:
    lines = [
        "",
        f"CPU from /proc over {usage.elapsed_s:g} s ({usage.ncpu} cores; machine {usage.machine_load:.0%} busy incl. "
        f"steal {usage.steal_cores:.2f}; others {usage.others_cores:.2f} cores; load average mean "
        f"{usage.loadavg_mean:g}, max {usage.loadavg_max:g}):",
        "",
        "| group | cores | processes | busiest process (share of a core) |",
        "|---|---:|---:|---|",
    ]
    for name, g in sorted(usage.groups.items(), key=lambda kv: -kv[1].cores):
        lines.append(f"| {name} | {g.cores:.2f} | {g.processes} | pid {g.busiest_pid}: {g.busiest_cores:.0%} |")
    if attribution is not None:
        lines += ["", f"Saturated: {attribution.text}"]
    return lines


def write_summary(
    run_dir: Path,
    meta: dict[str, Any],
    ok: bool,
    checks: list[Check],
    measured: Measured,
    plots: list[Path],
    timings: Timings | None = None,
    usage: Usage | None = None,
    attribution: Attribution | None = None,
) -> tuple[Path, Path]:
    """summary.json (everything, machine-readable) and summary.md (the same, for people)."""
    endpoints = endpoint_rows(run_dir, timings)
    pacing = load_pacing(run_dir)
    note = generator_note(usage)
    data = {
        **meta,
        "slo_met": ok,
        "checks": [c.__dict__ for c in checks],
        "measured": measured.as_dict(),
        "pacing_by_class": {
            k: {f: v for f, v in c.items() if f != "lag_hdr"} for k, c in pacing.get("classes", {}).items()
        },
        "endpoints": endpoints,
        "outcomes": outcome_rows(timings) if timings else [],
        "header_pairs": timings.pairs if timings else {},
        "cpu": usage.as_dict() if usage else None,
        "saturation": attribution.as_dict() if attribution else None,
        "generator_flag": bool(usage and usage.generator_busiest() > GENERATOR_FLAG),
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
        f"- latency ({m.percentiles}): p50 {_fmt(m.p50_ms)} ms, p95 {_fmt(m.p95_ms)} ms, p99 {_fmt(m.p99_ms)} ms, "
        f"max {_fmt(m.max_ms)} ms",
        f"- schedule: {_fmt(m.started)} of {_fmt(m.due)} arrivals started, lag p99 {_fmt(m.lag_p99_ms)} ms",
    ]
    if note:
        lines.append(f"- {note}")
    for key, value in meta.get("extra", {}).items():
        lines.append(f"- {key}: {value}")
    lines += ["", "| SLO | target | measured | result |", "|---|---|---|---|"]
    lines += [f"| {c.name} | {c.limit} | {c.measured} | {'ok' if c.ok else '**BREACH**'} |" for c in checks]
    lines += [
        "",
        "| type | name | requests | failures | p50 | p95 | p99 |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {e['type']} | {e['name']} | {e['requests']} | {e['failures']} | {_fmt(e['p50_ms'])} | "
        f"{_fmt(e['p95_ms'])} | {_fmt(e['p99_ms'])} |"
        for e in endpoints
    ]
    if timings is not None:
        lines += [
            "",
            "| cache outcome | requests | share | p50 | p95 | p99 | max |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {o['outcome']} | {o['requests']} | {o['share']:.1%} | {_fmt(o['p50_ms'])} | {_fmt(o['p95_ms'])} | "
            f"{_fmt(o['p99_ms'])} | {_fmt(o['max_ms'])} |"
            for o in outcome_rows(timings)
        ]
        pairs = ", ".join(f"{k} {v}" for k, v in timings.pairs.items())
        lines += ["", f"X-Cache-Status/X-App-Cache pairs: {pairs}"]
    if usage is not None:
        lines += cpu_lines(usage, attribution)
    lines += ["", *[f"![{p.stem}]({p.name})" for p in plots], ""]
    md_path = run_dir / "summary.md"
    md_path.write_text("\n".join(lines))
    return json_path, md_path
