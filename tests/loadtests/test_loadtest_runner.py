"""The runner's pure parts: durations, conf merging, stack state, spike plan, scenario catalogue."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from loadtests import run
from loadtests.catalog import SCENARIOS
from loadtests.shapes import spike_plan


@pytest.mark.parametrize(("text", "seconds"), [("90", 90), ("90s", 90), ("2m", 120), ("1m30s", 90), ("1h", 3600)])
def test_durations(text: str, seconds: int) -> None:
    assert run.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0s", "soon", "1.5m", "-3s"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        run.parse_duration(text)


def test_conf_merge_scenario_over_base(tmp_path: Path) -> None:
    merged = run.read_conf(run.HERE / "locust.conf") | run.read_conf(SCENARIOS["readers"].conf)
    assert merged["headless"] == "true" and merged["locustfile"].endswith("scenarios/readers.py")
    out = tmp_path / "locust.conf"
    run.write_conf(out, merged)
    assert run.read_conf(out) == merged
    (tmp_path / "bad.conf").write_text("headless\n")
    with pytest.raises(run.RunError):
        run.read_conf(tmp_path / "bad.conf")


def test_every_scenario_has_its_files() -> None:
    for scenario in SCENARIOS.values():
        conf = run.read_conf(scenario.conf)
        assert (run.REPO / conf["locustfile"]).resolve() == scenario.locustfile
        assert scenario.slo.exists()
        # Bounded runs: 2 minutes, but chaos 3 (six faults, a 10 s SIGSTOP among them, each seen to recover).
        assert run.parse_duration(conf["run-time"]) <= (180 if scenario.chaos else 120)


def test_stack_state_urls() -> None:
    state = {"app_url": "http://127.0.0.1:8000/", "services": {"nginx": {"url": "http://127.0.0.1:8080"}}}
    assert run.state_url(state, "app") == "http://127.0.0.1:8000"
    assert run.state_url(state, "nginx") == "http://127.0.0.1:8080"
    assert run.state_url({"nginx": "http://x:1"}, "nginx") == "http://x:1"
    assert run.state_url({}, "app") is None


def test_spike_plan() -> None:
    plan = [spike_plan(t, 100, 20, 80) for t in (0, 34, 35, 64, 65, 99)]
    assert [p[0] if p else None for p in plan] == [20, 20, 80, 80, 20, 20]
    assert plan[2] == (80, 80.0)  # the spike arrives within a second
    assert spike_plan(100, 100, 20, 80) is None
    with pytest.raises(ValueError):
        spike_plan(1, 100, 50, 10)


def test_no_stack_needs_a_target(capsys: pytest.CaptureFixture[str]) -> None:
    assert run.main(["readers", "--no-stack"]) == 2
    assert "--no-stack needs --target" in capsys.readouterr().err
    assert run.main(["--list"]) == 0


def test_capacity_runs_a_mix_and_only_capacity_takes_one(capsys: pytest.CaptureFixture[str]) -> None:
    capacity = SCENARIOS["capacity"]
    assert capacity.capacity and capacity.locustfile == SCENARIOS["readers"].locustfile
    conf = run.read_conf(capacity.conf)
    assert run.parse_duration(conf["run-time"]) == 15 and int(conf["processes"]) >= 1
    assert run.main(["readers", "--mix", "pollers", "--no-stack", "--target", "http://127.0.0.1:9"]) == 2
    assert "--mix is for the capacity scenario" in capsys.readouterr().err


def test_streamers_run_in_one_process_without_warm_up(capsys: pytest.CaptureFixture[str]) -> None:
    """Its writer's acknowledged writes and each stream's received events are matched in-process."""
    streamers = SCENARIOS["streamers"]
    assert streamers.one_process and streamers.warmup_s == 0 and streamers.writes
    assert "processes" not in run.read_conf(streamers.conf)
    assert run.main(["streamers", "--processes", "2", "--no-stack", "--target", "http://127.0.0.1:9"]) == 2
    assert "runs in one Locust process" in capsys.readouterr().err


@pytest.mark.parametrize(("rate", "users"), [(10, 20), (100, 25), (1000, 250), (5000, 300)])
def test_users_grow_with_the_rate_within_bounds(rate: float, users: int) -> None:
    args = run.build_parser().parse_args(["capacity"])
    assert run.users_for(rate, args) == users
    fixed = run.build_parser().parse_args(["capacity", "--users", "64"])
    assert run.users_for(rate, fixed) == 64


def test_warmup_and_processes_options() -> None:
    args = run.build_parser().parse_args(["readers", "--warmup", "0", "--processes", "3"])
    assert (args.warmup, args.processes) == (0, 3)
    assert run.build_parser().parse_args(["readers", "--warmup", "45s"]).warmup == 45
    assert SCENARIOS["cold"].warmup_s == 0 and SCENARIOS["readers"].warmup_s > 0
