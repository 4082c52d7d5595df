"""Plots and summary from a small real stats-history CSV."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loadtests import report, slo

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_history_rows_are_the_aggregated_ones(run_dir: Path) -> None:
    rows = report.read_history(run_dir / "locust_stats_history.csv")
    assert len(rows) == 14
    assert [r.requests for r in rows[:4]] == [0, 6, 12, 25]
    assert rows[0].p50 is None and rows[-1].p99 is not None  # "N/A" before the first request
    times, rps, fps = report.throughput_series(rows)
    assert times[:3] == [1.0, 2.0, 3.0]
    assert rps[:3] == [6.0, 6.0, 13.0]  # differences of the cumulative count per interval
    assert set(fps) == {0.0}


def test_plots_are_rendered_as_png(run_dir: Path) -> None:
    plots = report.render_plots(run_dir, "fixture")
    assert [p.name for p in plots] == ["throughput.png", "latency.png"]
    for path in plots:
        data = path.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 20_000  # a real figure, not an empty canvas


def test_plot_needs_history(run_dir: Path) -> None:
    path = run_dir / "locust_stats_history.csv"
    path.write_text(path.read_text().splitlines()[0] + "\n")
    with pytest.raises(ValueError, match="fewer than two"):
        report.render_plots(run_dir, "empty")


def test_summary_files(run_dir: Path, tmp_path: Path) -> None:
    slo_path = tmp_path / "slo.toml"
    slo_path.write_text(
        "p95_ms = 10\np99_ms = 30\nmax_failure_ratio = 0\nmin_rate_ratio = 0.95\nmax_lag_p99_ms = 50\n"
        'min_requests = 1\n[max_failures]\n"consistency: *" = 0\n'
    )
    ok, checks, measured = slo.evaluate(run_dir, slo_path)
    plots = report.render_plots(run_dir, "fixture")
    meta = {"scenario": "fixture", "command": "python loadtests/run.py fixture", "extra": {"bound": "1 s"}}
    json_path, md_path = report.write_summary(run_dir, meta, ok, checks, measured, plots)
    data = json.loads(json_path.read_text())
    assert data["slo_met"] is False and data["measured"]["p95_ms"] == 15.0
    assert {e["name"] for e in data["endpoints"]} == {"/feed", "/posts/[id]", "Aggregated"}
    markdown = md_path.read_text()
    assert "SLO BREACH" in markdown and "| p95 latency | <= 10 ms | 15 ms | **BREACH** |" in markdown
    assert "![throughput](throughput.png)" in markdown


def test_target_rate_timeline() -> None:
    from loadtests.pacing import target_rate_at

    intervals = [[10.0, None, 1.0], [10.0, 20.0, 2.0], [15.0, None, 0.5]]
    assert [target_rate_at(intervals, t) for t in (9.9, 10.0, 15.0, 20.0)] == [0.0, 3.0, 3.5, 1.5]
