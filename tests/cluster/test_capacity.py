"""devstack.capacity's accounting: CPU per process tree (PostgreSQL's children leave its process
group), deltas that survive a process exiting mid-run, and the wrk scripts for fresh ids."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from devstack.capacity import Meter, _parents, _process_cpu, _tree, lua_sequence
from tests.stack.conftest import wait_for


def test_a_process_that_exits_mid_run_subtracts_nothing() -> None:
    before = {1: 5.0, 2: 1.0}
    after = {1: 5.5, 3: 0.2}  # 2 exited, 3 was born
    assert Meter.spent(before, after) == pytest.approx(0.7)


def test_tree_follows_children_that_left_the_process_group() -> None:
    # setsid, as a PostgreSQL backend does: not in the parent's group, still its child.
    proc = subprocess.Popen(["sh", "-c", "setsid sleep 30 & sleep 30 & wait"], start_new_session=True)
    try:
        assert wait_for(lambda: len(_tree(proc.pid, _parents())) == 3, 10), _tree(proc.pid, _parents())
    finally:
        for pid in reversed(_tree(proc.pid, _parents())):
            os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=10)


BURN = """
import pathlib, sys, time
while time.process_time() < 0.3:
    pass
pathlib.Path(sys.argv[1]).touch()
time.sleep(30)
"""


def test_meter_counts_the_cpu_a_tier_spent_in_the_window(tmp_path: Path) -> None:
    done = tmp_path / "burnt"
    proc = subprocess.Popen([sys.executable, "-c", BURN, str(done)])
    try:
        meter = Meter({"tier": [proc.pid]})
        with meter.window() as w:
            assert wait_for(done.exists, 60)
        assert 0.25 <= w["raw_cpu"]["tier"] <= _process_cpu(proc.pid) + 0.01
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_wrk_scripts_walk_fresh_ids(tmp_path: Path) -> None:
    one = lua_sequence(tmp_path, "one", 100, 1).read_text()
    assert "local id = 99" in one and '"/api/v1/posts/" .. id' in one
    page = lua_sequence(tmp_path, "page", 500, 20).read_text()
    assert "local id = 499" in page and "for i = 0, 19" in page and '"/api/v1/posts?ids="' in page
