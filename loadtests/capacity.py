"""The capacity search: step the offered rate up (open model) until a step breaks an SLO, then bisect.

`KneeSearch` is the pure part: it is told each step's outcome and says which rate to try next. Step-up: the
start rate, then x factor while every step meets its SLOs (up to the maximum rate). Once a step fails, the
search bisects between the highest rate that passed below it and the lowest rate that failed, until the two
are within `resolution` of each other (or the step limit). A failing first step steps down by the factor
until one passes (or the minimum rate). The knee is the highest rate that met every SLO below the lowest rate
that failed; what broke there and what saturated come from the steps around it.

`write_report` turns the steps into capacity.json, summary.json / summary.md and capacity.png.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter, ScalarFormatter

STOP_BRACKETED = "bracketed"
STOP_MAX_RATE = "max rate met every SLO"
STOP_MIN_RATE = "even the minimum rate broke an SLO"
STOP_STEPS = "step limit"
STOP_BUDGET = "time budget"


@dataclass(frozen=True)
class SearchConfig:
    start_rate: float = 100.0
    factor: float = 2.0
    max_rate: float = 6400.0
    min_rate: float = 5.0
    resolution: float = 0.10  # stop bisecting once the failing rate is within 10% above the passing one
    max_steps: int = 12

    def __post_init__(self) -> None:
        if not 0 < self.min_rate <= self.start_rate <= self.max_rate:
            raise ValueError("need 0 < min rate <= start rate <= max rate")
        if self.factor <= 1 or self.resolution <= 0 or self.max_steps < 1:
            raise ValueError("need factor > 1, resolution > 0 and at least one step")


def nice_rate(rate: float) -> float:
    """A rate rounded for people: whole req/s from 10 up, one decimal below."""
    return float(round(rate)) if rate >= 10 else round(rate, 1)


@dataclass
class KneeSearch:
    config: SearchConfig
    results: list[tuple[float, bool]] = field(default_factory=list)  # (rate, met every SLO), in run order
    stopped: str | None = None

    def record(self, rate: float, ok: bool) -> None:
        self.results.append((rate, ok))

    @property
    def lowest_failure(self) -> float | None:
        return min((rate for rate, ok in self.results if not ok), default=None)

    @property
    def knee(self) -> float | None:
        """The highest rate that met every SLO below the lowest rate that broke one."""
        hi = self.lowest_failure
        return max((rate for rate, ok in self.results if ok and (hi is None or rate < hi)), default=None)

    def stop(self, reason: str) -> None:
        self.stopped = reason

    def next_rate(self) -> float | None:
        """The next rate to try, or None when the search is over (`stopped` says why)."""
        if self.stopped:
            return None
        cfg = self.config
        if len(self.results) >= cfg.max_steps:
            self.stop(STOP_STEPS)
            return None
        if not self.results:
            return cfg.start_rate
        lo, hi = self.knee, self.lowest_failure
        if hi is None:  # every step passed so far: step up
            assert lo is not None
            if lo >= cfg.max_rate:
                self.stop(STOP_MAX_RATE)
                return None
            return min(nice_rate(lo * cfg.factor), cfg.max_rate)
        if lo is None:  # every step failed so far: step down
            lower = nice_rate(hi / cfg.factor)
            if hi <= cfg.min_rate:
                self.stop(STOP_MIN_RATE)
                return None
            return max(lower, cfg.min_rate)
        if hi <= lo * (1 + cfg.resolution):
            self.stop(STOP_BRACKETED)
            return None
        mid = nice_rate((lo + hi) / 2)
        if not lo < mid < hi:  # rounding collapsed the bracket
            self.stop(STOP_BRACKETED)
            return None
        return mid


# --- steps and the report --------------------------------------------------------------------------------------


@dataclass
class Step:
    index: int
    rate: float  # offered (asked for)
    users: int
    run_dir: str  # relative to the capacity run's folder
    ok: bool
    breaches: list[dict[str, Any]]  # the failing checks: name, limit, measured
    target_rps: float | None  # what the schedule asked for, measured (pacing ledger)
    achieved_rps: float | None  # requests started per second (request log)
    requests: int
    failure_ratio: float
    rate_ratio: float | None
    lag_p99_ms: float | None
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    usage: dict[str, Any] | None  # cpu.Usage.as_dict()
    saturation: str  # cpu.attribute(...).text
    saturated: list[str]
    generator_busiest: float  # share of a core of the busiest Locust process
    wall_s: float  # how long the step took, start to report

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def result_summary(search: KneeSearch, steps: Sequence[Step]) -> dict[str, Any]:
    """The verdict: knee, the step at the knee, the lowest failing step, what broke and what saturated there."""
    knee = search.knee
    hi = search.lowest_failure
    knee_step = next((s for s in steps if s.ok and s.rate == knee), None)
    fail_step = next((s for s in steps if not s.ok and s.rate == hi), None)
    flagged = [s.rate for s in steps if s.generator_busiest >= 0.8]
    return {
        "knee_rps": knee,
        "lowest_failing_rps": hi,
        "stopped": search.stopped,
        "knee_step": knee_step.run_dir if knee_step else None,
        "failing_step": fail_step.run_dir if fail_step else None,
        "first_breach": fail_step.breaches if fail_step else [],
        "saturated_at_failure": fail_step.saturation if fail_step else None,
        "saturated_groups": fail_step.saturated if fail_step else [],
        "saturated_at_knee": knee_step.saturation if knee_step else None,
        "generator_flagged_steps": flagged,
    }


def breach_text(breaches: Sequence[dict[str, Any]]) -> str:
    return "; ".join(f"{b['name']} {b['measured']} (limit {b['limit']})" for b in breaches) or "none"


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:g}{unit}"
    return f"{value}{unit}"


def render_markdown(meta: dict[str, Any], result: dict[str, Any], steps: Sequence[Step]) -> str:
    knee = result["knee_rps"]
    lines = [
        f"# Capacity: {meta['mix']} via {meta['via']}: knee "
        + (f"**{knee:g} req/s**" if knee is not None else "**not found** (no step met every SLO)"),
        "",
        f"- command: `{meta.get('command', '')}`",
        f"- target: {meta.get('target', '')} ({meta.get('started_at', '')}, git {meta.get('git_rev', '?')})",
        f"- search: {meta['search']}; stopped: {result['stopped']}; {len(steps)} steps in {meta['elapsed_s']:.0f} s",
        f"- SLOs per step: {meta['slo_file']} (percentiles exact, from every request's timing)",
        f"- lowest failing rate: {_fmt(result['lowest_failing_rps'], ' req/s')}; first SLO to break there: "
        f"{breach_text(result['first_breach'])}",
        f"- saturated at the failing step: {result['saturated_at_failure'] or 'n/a'}",
        f"- at the knee: {result['saturated_at_knee'] or 'n/a'}",
        f"- generator: {meta['processes']} Locust worker process(es)"
        + (
            f"; **busiest above 80% of a core at {', '.join(f'{r:g}' for r in result['generator_flagged_steps'])} "
            "req/s**: those steps understate the stack"
            if result["generator_flagged_steps"]
            else "; never above 80% of a core"
        ),
        f"- machine during the search: {meta['machine']}",
    ]
    for key, value in meta.get("extra", {}).items():
        lines.append(f"- {key}: {value}")
    lines += [
        "",
        "| # | offered | users | target | achieved | p50 | p95 | p99 | failures | started/due | lag p99 | SLOs | "
        "CPU cores (app / pg / redis / nginx / generator / others) | saturated |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|",
    ]
    for s in sorted(steps, key=lambda s: s.rate):
        groups = (s.usage or {}).get("groups", {})
        cores = " / ".join(
            f"{groups[g]['cores']:.2f}" if g in groups else "-"
            for g in ("app", "postgres", "redis", "nginx", "generator")
        )
        others = (s.usage or {}).get("others_cores")
        verdict = "met" if s.ok else "**" + ", ".join(b["name"] for b in s.breaches) + "**"
        lines.append(
            f"| {s.index} | {s.rate:g} | {s.users} | {_fmt(s.target_rps)} | {_fmt(s.achieved_rps)} | "
            f"{_fmt(s.p50_ms)} | {_fmt(s.p95_ms)} | {_fmt(s.p99_ms)} | {s.failure_ratio:.3%} | "
            f"{_fmt(s.rate_ratio)} | {_fmt(s.lag_p99_ms)} | {verdict} | {cores} / {_fmt(others)} | "
            f"{', '.join(s.saturated) or '-'} |"
        )
    lines += ["", "Each step's folder has its own summary.md, plots and Locust report.", ""]
    lines += ["![capacity](capacity.png)", ""]
    return "\n".join(lines)


def render_plot(path: Path, title: str, steps: Sequence[Step], knee: float | None, p99_limit: float | None) -> Path:
    """Achieved vs offered rate, latency percentiles vs offered rate, CPU cores per group per step."""
    ordered = sorted(steps, key=lambda s: s.rate)
    rates = [s.rate for s in ordered]
    fig = Figure(figsize=(10, 11), dpi=110, layout="constrained")
    ax_rate, ax_lat, ax_cpu = fig.subplots(3, 1, sharex=True)

    top = max(rates + [s.achieved_rps or 0 for s in ordered]) * 1.1
    low = min(rates) * 0.8
    ax_rate.plot([low, top], [low, top], color="tab:gray", linestyle=":", linewidth=1, label="achieved = offered")
    ax_rate.plot(rates, [s.achieved_rps or 0 for s in ordered], color="tab:blue", marker="o", label="achieved")
    ax_rate.plot(
        rates,
        [s.target_rps or 0 for s in ordered],
        color="black",
        linestyle="--",
        marker=".",
        linewidth=1,
        label="target (schedule)",
    )
    for s in ordered:
        ax_rate.annotate(
            "ok" if s.ok else "breach",
            (s.rate, s.achieved_rps or 0),
            textcoords="offset points",
            xytext=(0, 8),
            ha="center",
            fontsize="x-small",
            color="tab:green" if s.ok else "tab:red",
        )
    ax_rate.set_ylabel("requests/s")
    ax_rate.set_ylim(bottom=0)
    ax_rate.set_title(f"{title}: capacity")

    for attr, color in (("p50_ms", "tab:green"), ("p95_ms", "tab:orange"), ("p99_ms", "tab:red")):
        points = [(s.rate, getattr(s, attr)) for s in ordered if getattr(s, attr)]
        ax_lat.plot(
            [p[0] for p in points], [p[1] for p in points], color=color, marker="o", label=attr.removesuffix("_ms")
        )
    if p99_limit:
        ax_lat.axhline(p99_limit, color="tab:red", linestyle="--", linewidth=1, label=f"p99 SLO {p99_limit:g} ms")
    ax_lat.set_yscale("log")
    ax_lat.yaxis.set_major_formatter(ScalarFormatter())
    ax_lat.set_ylabel("response time (ms, exact, log)")

    groups = ("app", "postgres", "redis", "nginx", "generator")
    colors = ("tab:blue", "tab:purple", "tab:red", "tab:green", "tab:orange")
    bottoms = [0.0] * len(ordered)
    width = [r * 0.06 for r in rates]
    for group, color in (*zip(groups, colors, strict=True), ("others", "tab:gray"), ("steal", "black")):
        values = []
        for s in ordered:
            u = s.usage or {}
            if group == "others":
                values.append(u.get("others_cores", 0.0))
            elif group == "steal":
                values.append(u.get("steal_cores", 0.0))
            else:
                values.append(u.get("groups", {}).get(group, {}).get("cores", 0.0))
        ax_cpu.bar(rates, values, width=width, bottom=bottoms, color=color, label=group, alpha=0.8)
        bottoms = [b + v for b, v in zip(bottoms, values, strict=True)]
    ncpu = next((s.usage["ncpu"] for s in ordered if s.usage), None)
    if ncpu:
        ax_cpu.axhline(ncpu, color="black", linestyle="--", linewidth=1, label=f"{ncpu} cores")
    ax_cpu.set_ylabel("CPU cores (mean over the step)")
    ax_cpu.set_xlabel("offered rate (requests/s, log)")
    ax_cpu.set_xscale("log")
    ax_cpu.xaxis.set_major_formatter(ScalarFormatter())
    ax_cpu.xaxis.set_minor_formatter(NullFormatter())
    ax_cpu.set_xticks(rates, [f"{r:g}" for r in rates], fontsize="x-small", rotation=45)
    for ax in (ax_rate, ax_lat, ax_cpu):
        if knee is not None:
            ax.axvline(knee, color="tab:green", linestyle="-.", linewidth=1.2, label=f"knee {knee:g} req/s")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="x-small", loc="upper left", ncols=2)
    fig.savefig(path)
    return path


def write_report(
    run_dir: Path,
    meta: dict[str, Any],
    search: KneeSearch,
    steps: Sequence[Step],
    p99_limit: float | None,
) -> dict[str, Any]:
    """capacity.png, summary.json and summary.md in `run_dir`; returns the verdict (result_summary)."""
    result = result_summary(search, steps)
    plot = (
        render_plot(run_dir / "capacity.png", f"{meta['mix']} via {meta['via']}", steps, result["knee_rps"], p99_limit)
        if steps
        else None
    )
    data = {
        "kind": "capacity",
        **meta,
        **result,
        "steps": [s.as_dict() for s in steps],
        "plots": [plot.name] if plot else [],
    }
    (run_dir / "summary.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    (run_dir / "summary.md").write_text(render_markdown(meta, result, steps))
    return result
