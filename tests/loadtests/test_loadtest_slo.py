"""The SLO checker: a met file exits 0, each kind of breach exits 1, unusable input exits 2."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from loadtests import slo

PASSING = """
description = "fixture"
p95_ms = 20
p99_ms = 30
max_failure_ratio = 0.001
min_rate_ratio = 0.95
max_lag_p99_ms = 100
min_requests = 1000
min_not_modified_ratio = 0.8

[max_failures]
"consistency: *" = 0
"""


def write_slo(tmp_path: Path, text: str = PASSING, **overrides: object) -> Path:
    lines = text.splitlines()
    for key, value in overrides.items():
        lines = [f"{key} = {value}" if line.startswith(f"{key} =") else line for line in lines]
    path = tmp_path / "slo.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def rewrite_stats(run_dir: Path, name: str, **columns: object) -> None:
    """Change columns of one row of the final stats table (adding the row if the name is new)."""
    path = run_dir / "locust_final_stats.csv"
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        fields, rows = list(reader.fieldnames or []), list(reader)
    row = next((r for r in rows if r["Name"] == name), None)
    if row is None:
        row = dict.fromkeys(fields, "0") | {"Type": "CHECK", "Name": name}
        rows.insert(-1, row)
    row.update({k: str(v) for k, v in columns.items()})
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fields)
        writer.writeheader()
        writer.writerows(rows)


def rewrite_pacing(run_dir: Path, **values: object) -> None:
    path = run_dir / "pacing.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | values))


def test_a_run_within_its_slos_passes(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert slo.main([str(run_dir), str(write_slo(tmp_path))]) == 0
    out = capsys.readouterr().out
    assert "SLOs met" in out and "BREACH" not in out
    measured = slo.measure(run_dir)
    assert (measured.requests, measured.p95_ms, measured.p99_ms) == (3657, 15.0, 22.0)  # the Aggregated row
    assert measured.not_modified_ratio == pytest.approx(0.9)


@pytest.mark.parametrize(
    ("overrides", "failing_check"),
    [
        ({"p95_ms": 14}, "p95 latency"),
        ({"p99_ms": 21}, "p99 latency"),
        ({"min_requests": 4000}, "requests"),
        ({"min_not_modified_ratio": 0.95}, "304 share of polls"),
    ],
)
def test_each_threshold_breach_exits_non_zero(
    run_dir: Path, tmp_path: Path, overrides: dict[str, object], failing_check: str
) -> None:
    path = write_slo(tmp_path, **overrides)
    assert slo.main([str(run_dir), str(path)]) == 1
    ok, checks, _ = slo.evaluate(run_dir, path)
    assert not ok
    assert [c.name for c in checks if not c.ok] == [failing_check]


def test_failure_ratio_breach(run_dir: Path, tmp_path: Path) -> None:
    rewrite_stats(run_dir, "Aggregated", **{"Failure Count": 10})
    ok, checks, measured = slo.evaluate(run_dir, write_slo(tmp_path))
    assert not ok and measured.failure_ratio == pytest.approx(10 / 3657)
    assert [c.name for c in checks if not c.ok] == ["failure ratio"]


def test_one_consistency_violation_breaches_even_under_the_failure_ratio(run_dir: Path, tmp_path: Path) -> None:
    rewrite_stats(run_dir, "consistency: stale title", **{"Request Count": 1, "Failure Count": 1})
    rewrite_stats(run_dir, "Aggregated", **{"Failure Count": 1})
    ok, checks, _ = slo.evaluate(run_dir, write_slo(tmp_path, max_failure_ratio=0.01))
    assert not ok
    assert [(c.name, c.measured) for c in checks if not c.ok] == [("failures 'consistency: *'", "1")]


def test_coordinated_omission_dropped_arrivals_breach_although_latency_is_fine(run_dir: Path, tmp_path: Path) -> None:
    """A generator that fell behind (sent 80% of its schedule) must not pass on its flattering latencies."""
    rewrite_pacing(run_dir, due=1000, started=800)
    ok, checks, measured = slo.evaluate(run_dir, write_slo(tmp_path))
    assert not ok and measured.rate_ratio == pytest.approx(0.8)
    assert [c.name for c in checks if not c.ok] == ["achieved/target rate"]


def test_coordinated_omission_late_sends_breach(run_dir: Path, tmp_path: Path) -> None:
    rewrite_pacing(run_dir, lag_p99_ms=3000.0)
    ok, checks, _ = slo.evaluate(run_dir, write_slo(tmp_path))
    assert not ok
    assert [c.name for c in checks if not c.ok] == ["schedule lag p99"]


def test_without_a_pacing_ledger_the_rate_cannot_pass(run_dir: Path, tmp_path: Path) -> None:
    (run_dir / "pacing.json").unlink()
    ok, checks, _ = slo.evaluate(run_dir, write_slo(tmp_path))
    assert not ok
    assert {c.name for c in checks if not c.ok} >= {"achieved/target rate", "schedule lag p99"}


def test_exceptions_inside_users_breach(run_dir: Path, tmp_path: Path) -> None:
    (run_dir / "locust_final_exceptions.csv").write_text(
        "Count,Message,Traceback,Nodes\n3,KeyError('data'),\"Traceback...\",local\n"
    )
    ok, checks, _ = slo.evaluate(run_dir, write_slo(tmp_path))
    assert not ok
    assert [(c.name, c.measured) for c in checks if not c.ok] == [("load-test errors", "3")]


def test_unusable_input_exits_2(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert slo.main([str(run_dir), str(write_slo(tmp_path, "p999_ms = 5\n" + PASSING))]) == 2
    assert "unknown keys" in capsys.readouterr().err
    missing = write_slo(tmp_path, PASSING.replace("max_lag_p99_ms = 100\n", ""))
    assert slo.main([str(run_dir), str(missing)]) == 2
    assert slo.main([str(tmp_path / "nothing-here"), str(write_slo(tmp_path))]) == 2


def test_the_table_lists_slo_and_measurement_side_by_side(run_dir: Path, tmp_path: Path) -> None:
    _, checks, _ = slo.evaluate(run_dir, write_slo(tmp_path, p99_ms=21))
    table = slo.render_table(checks).splitlines()
    assert table[0].split() == ["SLO", "target", "measured", "result"]
    row = next(line for line in table if line.startswith("p99 latency"))
    assert "<= 21 ms" in row and "22 ms" in row and row.rstrip().endswith("BREACH")


@pytest.mark.parametrize("name", ["readers", "pollers", "mixed", "cold", "spike", "smoke", "capacity"])
def test_every_scenario_slo_file_loads(name: str) -> None:
    from loadtests.catalog import SCENARIOS

    loaded = slo.load_slo(SCENARIOS[name].slo)
    assert 0 < loaded.p95_ms <= loaded.p99_ms
    assert loaded.min_rate_ratio >= 0.9 and loaded.max_failures.get("consistency: *") == 0


def test_a_request_slow_by_design_is_judged_apart_from_the_percentiles(run_dir: Path, tmp_path: Path) -> None:
    """A short run's p99 is its 3rd-worst request: 97 fast requests and 3 sign-ins (scrypt, slow on
    purpose) breach p99 when counted together; with [own_max_ms] the sign-ins are judged on their own
    limit, and a sign-in over that limit still breaches."""
    from loadtests.timings import LOG_DIR, RequestLog

    log = RequestLog(run_dir / LOG_DIR / "1.csv")
    for i in range(97):
        log.record(1_795_275_625.0 + i * 0.1, "GET", "/feed", 200, True, 5.0 + i % 10, "MISS", "miss")
    for i, ms in enumerate((120.0, 150.0, 180.0)):
        log.record(1_795_275_640.0 + i, "POST", "/auth/token", 200, True, ms, "", "")
    log.close()
    together = write_slo(tmp_path, PASSING.replace("min_requests = 1000", "min_requests = 10"))
    ok, checks, measured = slo.evaluate(run_dir, together)
    assert not ok and "p99 latency" in [c.name for c in checks if not c.ok] and measured.p99_ms == 150.0
    apart = tmp_path / "apart.toml"
    apart.write_text(together.read_text() + '\n[own_max_ms]\n"/auth/*" = 200\n')
    ok, checks, measured = slo.evaluate(run_dir, apart)
    assert measured.p99_ms == pytest.approx(14.0, abs=0.05) and measured.own_max_ms == {"/auth/*": 180.0}
    assert [c.name for c in checks if not c.ok] == [], checks
    apart.write_text(together.read_text() + '\n[own_max_ms]\n"/auth/*" = 170\n')
    ok, checks, _ = slo.evaluate(run_dir, apart)
    assert not ok and [c.name for c in checks if not c.ok] == ["slowest '/auth/*' (apart)"]
