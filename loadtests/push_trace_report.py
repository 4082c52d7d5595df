"""Where the late writes of a traced streamers run spent their time (issue 13).

    PUSH_TRACE=/tmp/trace make loadtest SCENARIO=streamers ...   # the stack and the clients write the trace
    python -m loadtests.push_trace_report /tmp/trace [--top 6]

Joins the stack's per-write trace (app/observability/push_trace.py) with the clients' deliveries: per write,
its live deliveries (from `written_at` to the kernel's receive time at each client: count, p5, p50, max), the
writer's stages (ms after `written_at`, and the worker's CPU time over them), which greenlets ran meanwhile,
and in each worker when the doorbell arrived, when its fan-out began and ended, and the loop lags around it.
The writes are listed by the p5 of their deliveries: a write late at (nearly) every stream first. Then the
stage percentiles over all writes.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from pathlib import Path
from typing import Any

STAGES = (
    "written",
    "locked",
    "inserted",
    "commit_sent",
    "committed",
    "wal_position",
    "outbox_sql",
    "bumped",
    "outbox_committed",
    "publish_sent",
    "published",
    "rung",
)  # fmt: skip  (the last two of the previous code)


def _lines(paths: list[Path]) -> list[dict[str, Any]]:
    return [json.loads(line) for path in paths for line in path.read_text().splitlines() if line]


def _rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def report(directory: Path, top: int) -> str:
    server = _lines(sorted(directory.glob("push-*.jsonl")))
    client = _lines(sorted(directory.glob("client-*.jsonl")))
    writes = sorted((r for r in server if r["k"] == "write"), key=lambda r: r["written"])
    if not writes:
        return f"{directory}: no traced write"
    pids = sorted({r["pid"] for r in server})
    by_written: dict[float, list[float]] = {}
    for row in client:
        if row["name"] == "SSE commit-to-event":  # live deliveries only (push_delivery.LIVE)
            stamp = datetime.fromisoformat(row["written_at"].replace("Z", "+00:00")).timestamp()
            by_written.setdefault(round(stamp, 3), []).append(row["since_written_ms"])
    start = writes[0]["written"]
    out = [f"{directory}: {len(writes)} writes, {len(client)} deliveries, workers {pids}"]
    rows = []
    for write in writes:
        at = write["written"]
        key = min(by_written, key=lambda k: abs(k - at), default=None)  # written_at is kept to the millisecond
        live = sorted(by_written[key]) if key is not None and abs(key - at) < 0.002 else []
        shift = (at - key) * 1000 if live and key is not None else 0.0
        rows.append((write, [ms - shift for ms in live]))
    rows.sort(key=lambda item: -_rank(item[1], 0.05) if item[1] else 0.0)
    for write, live in rows[:top]:
        at = write["written"]
        out.append(
            f"-- events {write['ids']} at +{at - start:.1f} s: {len(live)} live deliveries, p5 {_rank(live, 0.05):.1f}"
            f" / p50 {_rank(live, 0.5):.1f} / max {max(live, default=float('nan')):.1f} ms"
        )
        stages = [s for s in STAGES[1:] if s in write]
        out.append("   stages (ms): " + " ".join(f"{s}={(write[s] - at) * 1000:.1f}" for s in stages))
        if "cpu_written" in write:
            base = write["cpu_written"]
            cpu = " ".join(f"{s}={(write['cpu_' + s] - base) * 1000:.1f}" for s in stages if "cpu_" + s in write)
            out.append(f"   worker CPU (ms): {cpu}")
        if write.get("ran"):
            out.append(f"   greenlets that ran (ms): {write['ran']}")
        last = max(write["ids"])
        for pid in pids:
            msg = next((r["t"] for r in server if r["k"] == "msg" and r["pid"] == pid and r.get("last") == last), None)
            fan = next((r for r in server if r["k"] == "deliver" and r["pid"] == pid and r["last"] >= last), None)
            lags = [(round((r["t"] - at) * 1000), r["ms"], r.get("cpu")) for r in server
                    if r["k"] == "lag" and r["pid"] == pid and at - 0.2 <= r["t"] <= at + 0.3]  # fmt: skip
            parts = [f"   worker {pid}:", f"doorbell {(msg - at) * 1000:.1f}" if msg else "doorbell -"]
            if fan:
                parts.append(
                    f"fan-out {(fan['began'] - at) * 1000:.1f}-{(fan['t'] - at) * 1000:.1f} ({fan['written']})"
                )
            parts.append(f"lags (at, ms, cpu) {lags}")
            out.append(" ".join(parts))
    out.append("stages over all writes, ms after written_at: p50 / p90 / p99 / max")
    for stage in STAGES[1:]:
        values = [(w[stage] - w["written"]) * 1000 for w in writes if stage in w]
        if values:
            out.append(
                f"   {stage:17s} {_rank(values, 0.5):6.1f} {_rank(values, 0.9):6.1f} {_rank(values, 0.99):6.1f}"
                f" {max(values):6.1f}"
            )
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--top", type=int, default=6)
    args = parser.parse_args()
    print(report(args.directory, args.top))


if __name__ == "__main__":
    main()
