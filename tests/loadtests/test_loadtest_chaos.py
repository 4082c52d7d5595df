"""The chaos scenario's pure parts: the fault schedule, the per-fault windows, the SLO lines, the report."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from loadtests import catalog, slo
from loadtests.chaos import (
    FAULTS,
    SHORT_FAULTS,
    ChaosError,
    ChaosSlo,
    Fault,
    Request,
    database_deadline_ms,
    judge_faults,
    load_chaos_slo,
    parse_faults,
    read_violations,
    render_markdown,
    schedule,
    verdict,
)

T0 = 1_000.0


def ok(start: float, ms: float = 10.0) -> Request:
    return Request(T0 + start, ms, 200, True)


def failed(start: float, status: int = 503, ms: float = 10.0) -> Request:
    return Request(T0 + start, ms, status, False)


def two_faults() -> list[Fault]:
    return [
        Fault("redis-kill", T0 + 10, repaired=T0 + 11),
        Fault("postgres-stop", T0 + 30, repaired=T0 + 40),
    ]


def test_schedule_spreads_faults_between_the_lead_and_the_tail() -> None:
    assert schedule(["a", "b", "c", "d"], 90, lead=10, tail=16) == [10.0, 26.0, 42.0, 58.0]
    assert schedule([], 90) == []
    with pytest.raises(ChaosError):
        schedule(["a"], 20, lead=10, tail=15)


def test_parse_faults_knows_all_short_and_lists_and_refuses_unknown_names() -> None:
    assert parse_faults("all") == list(FAULTS)
    assert parse_faults("short") == list(SHORT_FAULTS)
    assert parse_faults("redis-kill, gunicorn-hup") == ["redis-kill", "gunicorn-hup"]
    with pytest.raises(argparse.ArgumentTypeError, match="redis-explode"):
        parse_faults("redis-kill,redis-explode")


def test_errors_are_counted_in_the_span_of_the_fault_they_follow() -> None:
    requests = [
        failed(5),  # before the first fault: no fault's
        failed(10.5),  # redis-kill, during
        failed(14, status=0),  # redis-kill, after its repair + grace (a transport failure counts as 5xx)
        Request(T0 + 15, 10.0, 404, False),  # a 4xx is not a 5xx
        failed(31),  # postgres-stop, during
        ok(45),
    ]
    first, second = judge_faults(two_faults(), requests, [], T0, T0 + 60, slow_ms=3000, grace=2, after=10)
    assert (first.requests, first.errors_5xx, first.errors_5xx_during) == (3, 2, 1)
    assert (second.requests, second.errors_5xx, second.errors_5xx_during) == (2, 1, 1)
    assert (first.at_s, first.repaired_after_s, second.repaired_after_s) == (10.0, 1.0, 10.0)


def test_a_request_belongs_to_the_span_its_answer_came_in() -> None:
    hung = failed(29.5, status=0, ms=10_000)  # started before postgres-stop, hung by it: ends at 39.5
    in_flight = ok(9.5, ms=2_000)  # in flight when redis-kill hit: its span, and "during"
    first, second = judge_faults(two_faults(), [hung, in_flight], [], T0, T0 + 60, slow_ms=1500, grace=2)
    assert (first.requests, first.errors_5xx, first.p99_during_ms) == (1, 0, 2000)
    assert (second.requests, second.errors_5xx, second.errors_5xx_during, second.max_ms) == (1, 1, 1, 10_000)
    assert first.time_to_recover_s == 0.5  # the in-flight one (too slow) ended at 11.5, the repair was at 11


def test_p99_during_and_after_split_at_the_repair_plus_grace() -> None:
    requests = [ok(10.2, 900), ok(12.9, 800), ok(13.5, 20), ok(22, 30), ok(24, 5000)]
    (report,) = judge_faults(two_faults()[:1], requests, [], T0, T0 + 60, slow_ms=3000, grace=2, after=10)
    assert report.p99_during_ms == 900  # 10.2 and 12.9 (repair 11 + grace 2 = 13)
    assert report.p99_after_ms == 30  # 13.5 and 22; 24 is past 13 + 10
    assert report.max_ms == 5000


def test_time_to_recover_runs_from_the_repair_to_the_end_of_the_last_bad_request() -> None:
    fault = [Fault("postgres-stop", T0 + 30, repaired=T0 + 40)]
    clean = judge_faults(fault, [ok(41), ok(50)], [], T0, T0 + 60, slow_ms=3000)
    assert clean[0].time_to_recover_s == 0.0
    slow = judge_faults(fault, [ok(39, 4000), ok(50)], [], T0, T0 + 60, slow_ms=3000)  # ends at 43
    assert slow[0].time_to_recover_s == 3.0
    errors = judge_faults(fault, [failed(44, ms=500), ok(50)], [], T0, T0 + 60, slow_ms=3000)
    assert errors[0].time_to_recover_s == 4.5
    refused = judge_faults(fault, [Request(T0 + 50, 10.0, 429, False)], [], T0, T0 + 60, slow_ms=3000)
    assert refused[0].time_to_recover_s == 0.0  # a 429 is an answer, not an outage
    unrepaired = judge_faults([Fault("worker-kill", T0 + 30)], [ok(41)], [], T0, T0 + 60, slow_ms=3000)
    assert unrepaired[0].time_to_recover_s is None and unrepaired[0].repaired_after_s is None


def test_stale_reads_are_split_into_during_the_fault_and_after_its_recovery() -> None:
    stale = [T0 + 5, T0 + 10.5, T0 + 12.9, T0 + 20, T0 + 41.9, T0 + 55]
    first, second = judge_faults(two_faults(), [], stale, T0, T0 + 60, slow_ms=3000, grace=2)
    assert (first.stale_during, first.stale_after_recovery) == (2, 1)
    assert (second.stale_during, second.stale_after_recovery) == (1, 1)


def audited(lost: int = 0, duplicated: int = 0, checked: int = 40) -> dict[str, int]:
    return {"lost": lost, "duplicated": duplicated, "acknowledged_posts_checked": checked, "uncertain": 1}


def lines_for(**kw: object) -> dict[str, tuple[bool, bool]]:
    reports = judge_faults(two_faults(), [], [], T0, T0 + 60, slow_ms=3000)
    args: dict[str, object] = {
        "slo": ChaosSlo(),
        "reports": reports,
        "audit_result": audited(),
        "stale_outside": 0,
        "max_ms": 11_500.0,
        "deadline_ms": None,
        "wanted": ["redis-kill", "postgres-stop"],
        "injector_errors": [],
    } | kw
    return {line.name: (line.ok, line.enforced) for line in verdict(**args)}  # type: ignore[arg-type]


def test_a_clean_run_passes_and_without_a_database_deadline_the_slowest_request_is_not_judged() -> None:
    lines = lines_for()
    assert all(ok for ok, _ in lines.values())
    assert lines["slowest request"] == (True, False)


def test_with_a_database_deadline_the_slowest_request_is_judged_against_it_plus_one_second() -> None:
    assert lines_for(deadline_ms=2000.0, max_ms=2900.0)["slowest request"] == (True, True)
    assert lines_for(deadline_ms=2000.0, max_ms=3100.0)["slowest request"] == (False, True)


def test_the_app_process_faults_slowest_request_is_reported_apart_and_not_judged() -> None:
    lines = lines_for(deadline_ms=2000.0, max_ms=2900.0, process_max_ms=6600.0)
    assert lines["slowest request"] == (True, True)
    assert lines["slowest request in app-process faults"] == (True, False)


def test_lost_duplicated_stale_missing_faults_and_no_audit_each_fail() -> None:
    assert lines_for(audit_result=audited(lost=1))["acknowledged writes lost"] == (False, True)
    assert lines_for(audit_result=audited(checked=0))["acknowledged writes lost"] == (False, True)  # nothing checked
    assert lines_for(audit_result=audited(duplicated=1))["acknowledged writes duplicated"] == (False, True)
    assert lines_for(stale_outside=1)["stale reads after recovery"] == (False, True)
    assert lines_for(audit_result=None)["acknowledged writes lost"] == (False, True)
    wanted = ["redis-kill", "postgres-stop", "gunicorn-hup"]
    assert lines_for(wanted=wanted)["faults injected and repaired"] == (False, True)
    assert lines_for(injector_errors=["worker-kill: no worker"])["faults injected and repaired"] == (False, True)
    reports = judge_faults([Fault("redis-kill", T0 + 10)], [], [], T0, T0 + 60, slow_ms=3000)  # never repaired
    assert not lines_for(reports=reports, wanted=["redis-kill"])["faults injected and repaired"][0]


def test_stale_after_recovery_in_a_fault_span_fails_the_run() -> None:
    reports = judge_faults(two_faults(), [], [T0 + 25], T0, T0 + 60, slow_ms=3000)
    assert lines_for(reports=reports)["stale reads after recovery"] == (False, True)


def test_the_markdown_report_has_a_row_per_fault_and_the_verdict() -> None:
    reports = judge_faults(two_faults(), [failed(10.5), ok(12)], [], T0, T0 + 60, slow_ms=3000)
    lines = verdict(ChaosSlo(), reports, audited(), 0, 500.0, None, ["redis-kill", "postgres-stop"], [])
    text = render_markdown({"load average": "1.0 2.0 3.0"}, reports, lines, True)
    assert text.startswith("# chaos: PASS")
    assert "| redis-kill | 10 | 1 | 2 | 1 (1) |" in text
    assert "| postgres-stop | 30 | 10 | 0 | 0 (0) | - | - | - |" in text
    assert "not judged" in text and "- load average: 1.0 2.0 3.0" in text


def test_the_scenario_slo_file_loads_both_ways(tmp_path: Path) -> None:
    path = catalog.SCENARIOS["chaos"].slo
    assert load_chaos_slo(path) == ChaosSlo()
    assert slo.load_slo(path).p99_ms > 0  # the ordinary part is valid too
    bad = tmp_path / "bad.toml"
    bad.write_text("[chaos]\nmax_lots = 0\n")
    with pytest.raises(ChaosError, match="max_lots"):
        load_chaos_slo(bad)


def test_the_database_deadline_comes_from_the_stack_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DB_DEADLINE_MS", raising=False)
    assert database_deadline_ms({}, "DB_DEADLINE_MS") is None
    assert database_deadline_ms({"DB_DEADLINE_MS": "2000"}, "DB_DEADLINE_MS") == 2000.0
    assert database_deadline_ms({"DB_DEADLINE_MS": "soon"}, "DB_DEADLINE_MS") is None


def test_violations_are_read_with_their_detection_times(tmp_path: Path) -> None:
    assert read_violations(tmp_path) == []
    lines = [json.dumps({"at": 1001.5, "name": "consistency: stale title"}), "", json.dumps({"at": 1002.0})]
    (tmp_path / "violations.jsonl").write_text("\n".join(lines) + "\n")
    assert read_violations(tmp_path) == [1001.5, 1002.0]
