"""bench/drivers.py (`python -m bench.drivers`): its selection and aggregation. No timing is asserted.

The measurement itself needs PostgreSQL and ~15 minutes; here: which configurations a run
measures, and that the table's figures are medians over rounds and medians of per-round ratios
against the app's configuration (not ratios of medians).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from app.pagination import TOP
from bench.drivers import BASELINE, CONFIGS, _decode_position, _parser, select_configs, summarize


def _run(config: str, round_: int, first_qps: float, client_ms: float, pg_ms: float) -> dict[str, Any]:
    page = {"qps": first_qps, "client_cpu_ms": client_ms, "pg_cpu_ms": pg_ms}
    deep = {"qps": first_qps / 2, "client_cpu_ms": client_ms, "pg_cpu_ms": pg_ms}
    return {"config": config, "round": round_, "pages": {"first": page, "deep": deep}}


def test_selection_keeps_the_table_order_and_always_measures_the_baseline() -> None:
    assert [c.name for c in select_configs("db-pg2, sa-pg3")] == [BASELINE, "sa-pg3", "db-pg2"]
    assert [c.name for c in select_configs("")] == list(CONFIGS)
    with pytest.raises(SystemExit, match="unknown configuration"):
        select_configs("sa-pg3,pg4")


def test_every_psycopg2_configuration_is_separate_from_psycopg_3_knobs() -> None:
    for config in CONFIGS.values():
        if config.driver == "psycopg2":  # psycopg 3's knobs mean nothing there: none is set
            assert not (config.binary or config.client_cursor or config.wait or config.deadline or config.generic_plans)
    layers = {(c.layer, c.driver) for c in CONFIGS.values()}
    assert layers == {(layer, driver) for layer in ("sqlalchemy", "dbapi") for driver in ("psycopg", "psycopg2")}


def test_summary_takes_medians_and_the_median_of_per_round_ratios() -> None:
    runs = [
        _run(BASELINE, 1, 100, 1.0, 1.0),
        _run("db-pg2", 1, 150, 0.5, 1.0),
        _run(BASELINE, 2, 200, 1.0, 1.0),  # a quiet round: both sides faster
        _run("db-pg2", 2, 220, 0.5, 1.5),
        _run(BASELINE, 3, 50, 2.0, 2.0),
        _run("db-pg2", 3, 100, 1.0, 1.0),
    ]
    summary = summarize(runs, [BASELINE, "db-pg2"])
    first = summary["db-pg2"]["first"]
    assert first["rounds"] == 3
    assert first["qps"] == 150 and (first["qps_min"], first["qps_max"]) == (100, 220)
    assert first["qps_vs_app"] == pytest.approx(1.5)  # per round 1.5, 1.1, 2.0 (medians' ratio: 1.5 too, by chance)
    assert first["client_cpu_vs_app"] == pytest.approx(0.5)
    assert first["cpu_vs_app"] == pytest.approx(0.75)  # per round 0.75, 1.0, 0.5
    assert summary["db-pg2"]["deep"]["qps"] == 75
    assert summary[BASELINE]["first"]["qps_vs_app"] == 1.0


def test_summary_ratio_needs_the_baseline_in_the_same_round() -> None:
    runs = [_run(BASELINE, 1, 100, 1.0, 1.0), _run("db-pg2", 1, 300, 1.0, 1.0), _run("db-pg2", 2, 100, 1.0, 1.0)]
    first = summarize(runs, [BASELINE, "db-pg2"])["db-pg2"]["first"]
    assert first["rounds"] == 2 and first["qps"] == 200
    assert first["qps_vs_app"] == pytest.approx(3.0)  # round 2 has no baseline: no ratio from it


def test_positions_and_the_command_line() -> None:
    assert _decode_position("top") == TOP
    assert _decode_position("2026-01-02T03:04:05.123456+00:00,42") == (
        datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC),
        42,
    )
    args = _parser().parse_args(["--rounds", "5", "--only", "app,db-pg2"])
    assert (args.rounds, args.concurrency, args.pool_size, args.child) == (5, 32, 32, None)
    assert "db-pg3-geventio" in _parser().format_help()


def test_connection_options_keep_the_apps_statement_timeout() -> None:
    assert CONFIGS["db-pg3"].options == "-c statement_timeout=5000"
    assert CONFIGS["db-pg3-generic"].options == "-c statement_timeout=5000 -c plan_cache_mode=force_generic_plan"
