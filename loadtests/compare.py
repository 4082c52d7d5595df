"""Two runs side by side, for A/B work: python loadtests/run.py compare RUN_A RUN_B [--out DIR]

Each RUN is a report folder with a summary.json: a scenario run, one step of a capacity search
(RUN/steps/NN-...), or a whole capacity search (its knee is compared, and the endpoints of each run's knee
step). Writes compare.md, compare.json and compare.png to --out (default: loadtests/reports/compare-A-vs-B/)
and prints the Markdown. Ratios are B / A: for latency above 1 means B is slower, for req/s B served more.
Compare runs that offered the same load: a warning says when the target rates differ by more than 5%.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

HERE = Path(__file__).resolve().parent
RATE_TOLERANCE = 0.05
METRICS = (("rps", "req/s"), ("p50_ms", "p50 ms"), ("p95_ms", "p95 ms"), ("p99_ms", "p99 ms"))


class CompareError(ValueError):
    pass


@dataclass
class RunView:
    path: Path
    label: str
    summary: dict[str, Any]
    endpoints: list[dict[str, Any]]
    headline: dict[str, Any]


def _read(path: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads((path / "summary.json").read_text())
    except (OSError, ValueError) as exc:
        raise CompareError(f"{path}: no readable summary.json ({exc})") from None
    return data


def load(path: Path, label: str) -> RunView:
    summary = _read(path)
    headline: dict[str, Any] = {}
    if summary.get("kind") == "capacity":
        headline["knee req/s"] = summary.get("knee_rps")
        headline["lowest failing req/s"] = summary.get("lowest_failing_rps")
        step = summary.get("knee_step") or summary.get("failing_step")
        if not step:
            raise CompareError(f"{path}: a capacity search without steps")
        inner = _read(path / step)
        headline["compared step"] = step
    else:
        inner = summary
    m = inner.get("measured", {})
    headline.update(
        {
            "SLOs met": inner.get("slo_met"),
            "target req/s": m.get("target_rps"),
            "achieved req/s": m.get("rps"),
            "requests": m.get("requests"),
            "failure ratio": m.get("failure_ratio"),
            "p50 ms": m.get("p50_ms"),
            "p95 ms": m.get("p95_ms"),
            "p99 ms": m.get("p99_ms"),
            "max ms": m.get("max_ms"),
            "schedule lag p99 ms": m.get("schedule_lag_p99_ms"),
            "percentiles": m.get("percentiles", "Locust (rounded)"),
            "generator flagged": inner.get("generator_flag"),
            "git": summary.get("git_rev"),
            "started": summary.get("started_at"),
        }
    )
    return RunView(path, label, summary, list(inner.get("endpoints", [])), headline)


def ratio(a: Any, b: Any) -> float | None:
    """b / a for two numbers (None when either is missing or a is 0)."""
    if not isinstance(a, int | float) or not isinstance(b, int | float) or isinstance(a, bool) or not a:
        return None
    return round(b / a, 3)


def compare(a: RunView, b: RunView) -> dict[str, Any]:
    headline = [
        {"what": key, "a": a.headline.get(key), "b": b.headline.get(key), "ratio": ratio(a.headline.get(key), value)}
        for key, value in b.headline.items()
        if key in a.headline
    ]
    by_name_a = {e["name"]: e for e in a.endpoints}
    by_name_b = {e["name"]: e for e in b.endpoints}
    names = sorted(by_name_a, key=lambda n: (n != "Aggregated", -(by_name_a[n].get("requests") or 0)))
    names += [n for n in by_name_b if n not in by_name_a]
    endpoints = []
    for name in names:
        ea, eb = by_name_a.get(name, {}), by_name_b.get(name, {})
        row: dict[str, Any] = {"name": name, "type": ea.get("type") or eb.get("type", "")}
        for key, _ in METRICS:
            row[f"a_{key}"], row[f"b_{key}"] = ea.get(key), eb.get(key)
            row[f"{key}_ratio"] = ratio(ea.get(key), eb.get(key))
        row["a_failures"], row["b_failures"] = ea.get("failures"), eb.get("failures")
        endpoints.append(row)
    warnings = []
    target = ratio(a.headline.get("target req/s"), b.headline.get("target req/s"))
    if target is not None and abs(target - 1) > RATE_TOLERANCE:
        warnings.append(
            f"the runs offered different loads (target {a.headline['target req/s']} vs "
            f"{b.headline['target req/s']} req/s): latency ratios compare unequal loads"
        )
    if a.headline["percentiles"] != b.headline["percentiles"]:
        warnings.append("one run's percentiles are Locust's rounded ones, the other's exact")
    for view in (a, b):
        if view.headline.get("generator flagged"):
            warnings.append(f"run {view.label}: the generator was above 80% of a core (its figures understate)")
    return {
        "a": str(a.path),
        "b": str(b.path),
        "headline": headline,
        "endpoints": endpoints,
        "warnings": warnings,
    }


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _ratio_cell(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def render_markdown(result: dict[str, Any]) -> str:
    lines = [
        "# Load test comparison: B / A",
        "",
        f"- A: `{result['a']}`",
        f"- B: `{result['b']}`",
        "- ratios are B / A: latency above 1 = B slower; req/s above 1 = B served more",
    ]
    lines += [f"- **warning**: {w}" for w in result["warnings"]]
    lines += ["", "| | A | B | B/A |", "|---|---:|---:|---:|"]
    lines += [
        f"| {r['what']} | {_fmt(r['a'])} | {_fmt(r['b'])} | {_ratio_cell(r['ratio'])} |" for r in result["headline"]
    ]
    header = (
        "| endpoint | " + " | ".join(f"A {label} | B {label} | B/A" for _, label in METRICS) + " | failures A / B |"
    )
    lines += ["", header, "|---|" + "---:|" * (3 * len(METRICS) + 1)]
    for row in result["endpoints"]:
        cells = []
        for key, _ in METRICS:
            cells += [_fmt(row[f"a_{key}"]), _fmt(row[f"b_{key}"]), _ratio_cell(row[f"{key}_ratio"])]
        failures = f"{_fmt(row['a_failures'])} / {_fmt(row['b_failures'])}"
        lines.append(f"| {row['name']} | " + " | ".join(cells) + f" | {failures} |")
    lines += ["", "![comparison](compare.png)", ""]
    return "\n".join(lines)


def render_png(result: dict[str, Any], path: Path) -> Path:
    """Left: p99 of A and B per endpoint; right: the B/A ratios of p50, p99 and req/s (1 = no change)."""
    rows = [r for r in result["endpoints"] if r["a_p99_ms"] is not None or r["b_p99_ms"] is not None]
    names = [r["name"] for r in rows][::-1]
    rows = rows[::-1]
    fig = Figure(figsize=(12, max(3.0, 0.35 * len(rows) + 1.5)), dpi=110, layout="constrained")
    ax_abs, ax_ratio = fig.subplots(1, 2, sharey=True)
    ys = list(range(len(rows)))
    height = 0.38
    ax_abs.barh(
        [y + height / 2 for y in ys], [r["a_p99_ms"] or 0 for r in rows], height, label="A p99", color="tab:gray"
    )
    ax_abs.barh(
        [y - height / 2 for y in ys], [r["b_p99_ms"] or 0 for r in rows], height, label="B p99", color="tab:blue"
    )
    ax_abs.set_yticks(ys, names, fontsize="small")
    ax_abs.set_xlabel("p99 (ms)")
    ax_abs.legend(fontsize="small")
    ax_abs.grid(True, axis="x", alpha=0.3)
    width = 0.27
    for offset, key, color in (
        (width, "p50_ms_ratio", "tab:green"),
        (0.0, "p99_ms_ratio", "tab:red"),
        (-width, "rps_ratio", "tab:blue"),
    ):
        ax_ratio.barh(
            [y + offset for y in ys],
            [(r[key] or 1.0) - 1.0 for r in rows],
            width,
            left=1.0,
            color=color,
            label=key.removesuffix("_ratio").replace("_ms", ""),
        )
    ax_ratio.axvline(1.0, color="black", linewidth=1)
    ax_ratio.set_xlabel("B / A")
    ax_ratio.legend(fontsize="small")
    ax_ratio.grid(True, axis="x", alpha=0.3)
    fig.suptitle(f"B: {Path(result['b']).name}  vs  A: {Path(result['a']).name}", fontsize="medium")
    fig.savefig(path)
    return path


def write(result: dict[str, Any], out: Path) -> tuple[Path, Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    md = out / "compare.md"
    md.write_text(render_markdown(result))
    js = out / "compare.json"
    js.write_text(json.dumps(result, indent=2, default=str) + "\n")
    png = render_png(result, out / "compare.png")
    return md, js, png


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python loadtests/run.py compare", description=__doc__.splitlines()[0])
    p.add_argument("run_a", type=Path, help="report folder A (the baseline)")
    p.add_argument("run_b", type=Path, help="report folder B")
    p.add_argument("--out", type=Path, help="where compare.md/.json/.png go (default loadtests/reports/compare-A-vs-B)")
    args = p.parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        a, b = load(args.run_a, "A"), load(args.run_b, "B")
    except CompareError as exc:
        print(f"compare: {exc}", file=sys.stderr)
        return 2
    result = compare(a, b)
    out = args.out or HERE / "reports" / f"compare-{args.run_a.resolve().name}-vs-{args.run_b.resolve().name}"
    md, _, png = write(result, out)
    print(md.read_text())
    print(f"compare: {md}\ncompare: {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
