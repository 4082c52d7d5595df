"""Exact percentiles: per-request logs from several processes, HDR histograms, series, merged pacing ledgers."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest

from loadtests import pacing, slo, timings
from loadtests.pacing import Pacer, PacingLedger
from loadtests.timings import RequestLog, Row, nearest_rank, outcome_label

HDR_TOLERANCE = 1.5e-3  # 3 significant digits in the histogram, then rounded to 4 significant digits


def exact(values: list[float], fraction: float) -> float:
    return nearest_rank(sorted(values), fraction)


def make_rows(n: int, seed: int, start: float = 1_000_000.0) -> list[Row]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        ms = rng.lognormvariate(1.0, 1.2)  # ~2.7 ms median, a long tail (hundreds of ms)
        edge, app = rng.choice([("HIT", "near_hit"), ("MISS", "miss"), ("EXPIRED", "hit"), ("", "near_hit")])
        rows.append(Row(start + i * 0.01, "GET", rng.choice(["/feed", "/posts/[id]"]), 200, True, ms, edge, app))
    return rows


def test_hdr_percentiles_match_the_exact_ones() -> None:
    rows = make_rows(10_000, seed=1)
    values = [r.ms for r in rows]
    t = timings.summarize(rows)
    assert t is not None and t.overall.count == 10_000
    for got, fraction in ((t.overall.p50_ms, 0.50), (t.overall.p95_ms, 0.95), (t.overall.p99_ms, 0.99)):
        assert got == pytest.approx(exact(values, fraction), rel=HDR_TOLERANCE)
    assert t.overall.max_ms == pytest.approx(max(values), rel=HDR_TOLERANCE)
    feed = [r.ms for r in rows if r.name == "/feed"]
    assert t.by_name["/feed"].count == len(feed)
    assert t.by_name["/feed"].p99_ms == pytest.approx(exact(feed, 0.99), rel=HDR_TOLERANCE)


def test_exact_where_locust_rounds() -> None:
    """Locust keeps 1234.5 ms as 1200 and 147 ms as 150 in its statistics; the log keeps them as they were (to
    the histogram's precision: its bucket's top, never below the value)."""
    rows = [Row(1.0 + i, "GET", "/feed", 200, True, ms, "", "miss") for i, ms in enumerate([147.0] * 99 + [1234.5])]
    t = timings.summarize(rows)
    assert t is not None
    assert 147.0 <= t.overall.p99_ms <= 147.0 * (1 + HDR_TOLERANCE)
    assert 1234.5 <= (t.overall.max_ms or 0) <= 1234.5 * (1 + HDR_TOLERANCE)


def write_log(run_dir: Path, pid: int, rows: list[Row]) -> None:
    log = RequestLog(run_dir / timings.LOG_DIR / f"{pid}.csv")
    for r in rows:
        log.record(r.start, r.type, r.name, r.status, r.ok, r.ms, r.edge, r.app)
    log.close()


def test_the_logs_of_several_processes_merge_into_one_run(tmp_path: Path) -> None:
    a, b = make_rows(3000, seed=2), make_rows(5000, seed=3, start=1_000_000.005)
    write_log(tmp_path, 101, a)
    write_log(tmp_path, 202, b)
    t = timings.analyze(tmp_path)
    assert t is not None and t.overall.count == 8000
    values = [r.ms for r in a + b]
    assert t.overall.p99_ms == pytest.approx(exact(values, 0.99), rel=HDR_TOLERANCE)
    # The same figure from each process's own histogram, merged (how two runs' histograms add up).
    half_a, half_b = timings.summarize(a), timings.summarize(b)
    assert half_a is not None and half_b is not None
    merged = timings.merge_encoded([half_a.histograms[timings.ALL], half_b.histograms[timings.ALL]])
    assert merged.get_total_count() == 8000
    assert timings.stats_of(merged).p99_ms == t.overall.p99_ms
    saved = json.loads((tmp_path / timings.LATENCY_FILE).read_text())
    assert saved["overall"]["p99_ms"] == t.overall.p99_ms
    assert timings.load_overall(tmp_path) == t.overall


def test_checks_count_but_have_no_latency_and_failures_are_kept() -> None:
    rows = [
        Row(10.0, "GET", "/feed", 200, True, 5.0, "", "hit"),
        Row(10.2, "GET", "/feed", 500, False, 50.0, "", ""),
        Row(10.4, "CHECK", "consistency: stale title", 0, False, 0.0, "", ""),
        Row(11.5, "GET", "/posts/[id]", 0, False, 10_000.0, "", ""),
    ]
    t = timings.summarize(rows)
    assert t is not None
    assert (t.overall.count, t.overall.failures, t.not_timed) == (3, 2, 1)
    assert t.by_outcome["no response"].count == 1
    assert t.by_outcome["app hit"].p50_ms == pytest.approx(5.0, rel=HDR_TOLERANCE)
    assert [(p.t, p.count, p.failures) for p in t.series[timings.ALL]] == [(0.0, 2, 1), (1.0, 1, 1)]
    assert t.series["name:/feed"][0].p99_ms == 50.0 and t.series["name:/feed"][1].count == 0


@pytest.mark.parametrize(
    ("edge", "app", "status", "label"),
    [
        ("HIT", "miss", 200, "nginx HIT"),  # the app's header in a cached entry is the one it was stored with
        ("MISS", "hit", 200, "app hit"),
        ("EXPIRED", "near_hit", 200, "app near_hit"),
        ("", "not_modified", 304, "app not_modified"),  # via the app port: no Nginx header
        ("BYPASS", "", 201, "app -"),
        ("", "", 0, "no response"),
    ],
)
def test_cache_outcome_labels(edge: str, app: str, status: int, label: str) -> None:
    assert outcome_label(edge, app, status) == label


def test_a_log_with_other_columns_is_refused(tmp_path: Path) -> None:
    (tmp_path / timings.LOG_DIR).mkdir()
    (tmp_path / timings.LOG_DIR / "1.csv").write_text("start,name,ms\n1,/feed,2\n")
    with pytest.raises(ValueError, match="unexpected columns"):
        timings.analyze(tmp_path)
    assert timings.analyze(tmp_path / "elsewhere") is None


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def ledger_with_lags(lags: list[float], rate: float, seed: int) -> PacingLedger:
    clock = FakeClock()
    ledger = PacingLedger()
    pacer = ledger.add("Reader", Pacer(rate, random.Random(seed), poisson=False, clock=clock, wall=clock))
    pacer.begin()
    pacer.lags.extend(lags)
    pacer.finished = len(lags)
    clock.now += len(lags) / rate
    pacer.stop()
    return ledger


def test_pacing_ledgers_of_several_processes_merge(tmp_path: Path) -> None:
    rng = random.Random(4)
    lags_a = [rng.expovariate(50) for _ in range(4000)]
    lags_b = [rng.expovariate(5) for _ in range(1000)]  # a slower process: its lags dominate the tail
    for pid, lags in ((1, lags_a), (2, lags_b)):
        ledger_with_lags(lags, 10.0, pid).write(pacing.part_path(tmp_path, pid))
    merged = pacing.load_pacing(tmp_path, write=True)
    assert merged["processes"] == 2 and merged["due"] >= merged["started"] >= 5000
    assert merged["lag_p99_ms"] == pytest.approx(exact(lags_a + lags_b, 0.99) * 1000, rel=HDR_TOLERANCE)
    assert merged["classes"]["Reader"]["users"] == 2
    assert len(merged["intervals"]) == 2
    assert json.loads((tmp_path / pacing.PACING_FILE).read_text())["lag_p99_ms"] == merged["lag_p99_ms"]


def test_the_slo_check_uses_the_exact_percentiles_when_the_run_has_a_log(run_dir: Path, tmp_path: Path) -> None:
    slo_path = tmp_path / "slo.toml"
    slo_path.write_text(
        "p95_ms = 20\np99_ms = 30\nmax_failure_ratio = 0.001\nmin_rate_ratio = 0.95\nmax_lag_p99_ms = 100\n"
        "min_requests = 1000\n"
    )
    rounded = slo.measure(run_dir)
    assert (rounded.p99_ms, rounded.percentiles) == (22.0, slo.ROUNDED)
    rows = [Row(1_795_275_625.0 + i * 0.004, "GET", "/feed", 200, True, 3.0, "HIT", "hit") for i in range(3600)]
    rows[-40:] = [Row(r.start, "GET", "/feed", 200, True, 31.5, "", "miss") for r in rows[-40:]]
    write_log(run_dir, 7, rows)
    measured = slo.measure(run_dir)
    assert measured.percentiles == slo.EXACT
    assert measured.p99_ms == pytest.approx(31.5, rel=HDR_TOLERANCE)
    assert measured.p50_ms == pytest.approx(3.0, rel=HDR_TOLERANCE)
    ok, checks, _ = slo.evaluate(run_dir, slo_path)
    assert not ok and [c.name for c in checks if not c.ok] == ["p99 latency"]
    shutil.rmtree(run_dir / timings.LOG_DIR)
    (run_dir / timings.LATENCY_FILE).unlink()
    assert slo.measure(run_dir).percentiles == slo.ROUNDED


@pytest.mark.parametrize(
    ("offered", "users", "classes", "scale"),
    [
        (110.0, 100, [(9, 0, 1.0), (1, 0, 2.0)], 1.0),  # the readers mix as written: 90 x 1 + 10 x 2
        (1100.0, 100, [(9, 0, 1.0), (1, 0, 2.0)], 10.0),
        (205.0, 80, [(8, 0, 1.0), (1, 0, 2.0), (3, 0, 0.5), (0, 2, 0.5), (0, 2, 2.0)], 200.0 / (76 * 11.5 / 12)),
    ],
)
def test_rate_scale(offered: float, users: int, classes: list[tuple[int, int, float]], scale: float) -> None:
    assert pacing.rate_scale(offered, users, classes) == pytest.approx(scale)


def test_rate_scale_refuses_what_fixed_classes_already_exceed() -> None:
    with pytest.raises(ValueError):
        pacing.rate_scale(4.0, 10, [(1, 0, 1.0), (0, 2, 2.5)])
    with pytest.raises(ValueError):
        pacing.rate_scale(100.0, 2, [(0, 2, 2.5), (1, 0, 1.0)])  # no user left for the weighted class
