"""Plots and summary from a small real stats-history CSV."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loadtests import cpu, report, slo, timings
from loadtests.catalog import SCENARIOS
from loadtests.timings import RequestLog

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


def add_request_log(run_dir: Path) -> timings.Timings:
    """A request log over the fixture's 14 s: feeds through Nginx (HIT or MISS to the app) and post details."""
    log = RequestLog(run_dir / timings.LOG_DIR / "1.csv")
    start = 1_795_275_625.0
    for i in range(1400):
        t = start + i * 0.01
        if i % 3:
            log.record(t, "GET", "/feed", 200, True, 1.0 + (i % 7), "HIT" if i % 2 else "MISS", "near_hit")
        else:
            log.record(t, "GET", "/posts/[id]", 200 if i % 50 else 500, bool(i % 50), 5.0 + (i % 40), "MISS", "miss")
    log.record(start + 5, "CHECK", "consistency: stale title", 0, False, 0.0, "", "")
    log.close()
    found = timings.analyze(run_dir)
    assert found is not None
    return found


def test_with_a_request_log_every_plot_is_exact_and_split(run_dir: Path, tmp_path: Path) -> None:
    found = add_request_log(run_dir)
    limits = slo.load_slo(SCENARIOS["readers"].slo)
    line = [(found.start + s, {"app": 0.5, "generator": 0.2, "others": 0.1, "steal": 0.0}) for s in range(1, 14)]
    plots = report.render_plots(run_dir, "fixture", limits, found, line, ncpu=2)
    assert [p.name for p in plots] == ["throughput.png", "latency.png", "endpoints.png", "outcomes.png", "cpu.png"]
    for path in plots:
        data = path.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 20_000
    rows = report.endpoint_rows(run_dir, found)
    names = [r["name"] for r in rows]
    assert names[:2] == ["/feed", "/posts/[id]"] and names[-1] == "Aggregated"
    assert rows[-1]["requests"] == 1400 and found.not_timed == 1  # the CHECK event has no response time
    assert {o["outcome"] for o in report.outcome_rows(found)} == {"nginx HIT", "app near_hit", "app miss"}


def test_the_target_is_a_step_function_of_the_users_running() -> None:
    intervals = [[10.0, None, 1.0], [12.0, 20.0, 2.0], [15.0, None, 0.5]]
    times, rates = report.target_steps(intervals, 9.0, 25.0)
    assert times == [0.0, 1.0, 3.0, 6.0, 11.0, 16.0]
    assert rates == [0.0, 1.0, 3.0, 3.5, 1.5, 1.5]


def test_the_summary_shows_outcomes_cpu_and_flags_a_busy_generator(run_dir: Path, tmp_path: Path) -> None:
    found = add_request_log(run_dir)
    slo_path = tmp_path / "slo.toml"
    slo_path.write_text(
        "p95_ms = 100\np99_ms = 100\nmax_failure_ratio = 0.1\nmin_rate_ratio = 0.95\nmax_lag_p99_ms = 50\n"
        "min_requests = 1\n"
    )
    ok, checks, measured = slo.evaluate(run_dir, slo_path)
    groups = {
        "app": cpu.GroupUsage(0.5, 3, 11, 0.3),
        "generator": cpu.GroupUsage(0.95, 3, 21, 0.91),
    }
    usage = cpu.Usage(14.0, 2, groups, 1.6, 0.0, 0.15, 1.8, 1.5)
    attribution = cpu.attribute(usage)
    meta = {"scenario": "fixture", "command": "python loadtests/run.py readers"}
    json_path, md_path = report.write_summary(run_dir, meta, ok, checks, measured, [], found, usage, attribution)
    markdown = md_path.read_text()
    assert f"latency ({slo.EXACT})" in markdown
    assert "**GENERATOR CPU 91%** of a core (Locust pid 21)" in markdown
    assert "| nginx HIT |" in markdown and "| app miss |" in markdown
    assert "Saturated: the load generator (pid 21 at 91% of a core)" in markdown
    data = json.loads(json_path.read_text())
    assert data["generator_flag"] is True and data["cpu"]["groups"]["generator"]["busiest_cores"] == 0.91
    assert data["endpoints"][-1]["name"] == "Aggregated" and data["endpoints"][-1]["requests"] == 1400
