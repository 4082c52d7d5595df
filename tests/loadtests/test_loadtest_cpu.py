"""CPU by process group from /proc samples, and what saturated (a fake /proc, then the real one)."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import pytest

from loadtests import cpu
from loadtests.cpu import CLK_TCK, GroupUsage, Usage


class FakeProc:
    """A /proc with the files the sampler reads: <pid>/stat, stat, loadavg."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir()
        self.machine = [0, 0, 0, 0]  # busy, idle, steal, iowait
        self.write_machine()
        (root / "loadavg").write_text("1.50 1.20 0.90 2/300 4242\n")

    def process(self, pid: int, ppid: int, ticks: int, start: int = 100, comm: str = "python") -> None:
        d = self.root / str(pid)
        d.mkdir(exist_ok=True)
        # Fields 3..22 after "pid (comm)": state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
        # utime stime cutime cstime priority nice threads itrealvalue starttime.
        utime, stime = ticks - ticks // 4, ticks // 4
        rest = f"S {ppid} {ppid} {ppid} 0 -1 0 0 0 0 0 {utime} {stime} 0 0 20 0 1 0 {start} 0 0"
        (d / "stat").write_text(f"{pid} ({comm}) {rest}\n")

    def gone(self, pid: int) -> None:
        for f in (self.root / str(pid)).iterdir():
            f.unlink()
        (self.root / str(pid)).rmdir()

    def write_machine(self) -> None:
        busy, idle, steal, iowait = self.machine
        (self.root / "stat").write_text(
            f"cpu  {busy} 0 0 {idle} {iowait} 0 0 {steal} 0 0\ncpu0 0 0 0 0 0 0 0 0 0 0\nintr 1 2 3\n"
        )

    def tick(self, busy: int, idle: int, steal: int = 0) -> None:
        self.machine = [self.machine[0] + busy, self.machine[1] + idle, self.machine[2] + steal, 0]
        self.write_machine()


def sample_at(fake: FakeProc, roots: dict[str, list[int]], wall: float) -> cpu.Sample:
    return dataclasses.replace(cpu.take_sample(roots, fake.root), wall=wall)


def test_parse_stat_with_spaces_and_parentheses_in_the_command() -> None:
    line = "4242 (gunicorn: worker (app) 1) R 4241 4241 4241 0 -1 4194560 1 0 0 0 700 300 0 0 20 0 1 0 98765 1 2\n"
    assert cpu.parse_stat(4242, line) == cpu.Proc(pid=4242, ppid=4241, start=98765, ticks=1000)


def test_groups_follow_descendants_count_new_processes_and_ignore_recycled_pids(tmp_path: Path) -> None:
    fake = FakeProc(tmp_path / "proc")
    fake.process(10, 1, 100)  # gunicorn master
    fake.process(11, 10, 1000)  # worker
    fake.process(12, 10, 1000)  # worker
    fake.process(20, 1, 50)  # redis
    fake.process(30, 1, 0)  # locust master
    fake.process(99, 1, 5000)  # someone else's job
    roots = {"app": [10], "redis": [20], "generator": [30]}
    first = sample_at(fake, roots, wall=1000.0)
    # 10 s later: worker 11 used 9 s of CPU, worker 12 used 2 s; a locust worker was forked and used 3 s;
    # pid 20 was recycled (another start time): its ticks are new, not a delta. The machine: 19 s busy of 20.
    fake.process(11, 10, 1000 + 9 * CLK_TCK)
    fake.process(12, 10, 1000 + 2 * CLK_TCK)
    fake.process(31, 30, 3 * CLK_TCK)
    fake.process(20, 1, 1 * CLK_TCK, start=555)
    fake.process(99, 1, 5000 + 4 * CLK_TCK)
    fake.tick(busy=19 * CLK_TCK, idle=1 * CLK_TCK)
    second = sample_at(fake, roots, wall=1010.0)
    assert second.members["generator"] == frozenset({30, 31})
    u = cpu.usage([first, second], ncpu=2)
    assert u is not None and u.elapsed_s == 10.0
    app = u.groups["app"]
    assert (app.cores, app.processes, app.busiest_pid, app.busiest_cores) == (1.1, 3, 11, 0.9)
    assert u.groups["generator"].cores == 0.3 and u.groups["generator"].busiest_pid == 31
    assert u.groups["redis"].cores == 0.1
    assert u.busy_cores == 1.9 and u.others_cores == pytest.approx(0.4)  # pid 99's 4 s are nobody's group
    assert u.machine_load == pytest.approx(0.95)
    assert u.loadavg_max == 1.5


def test_the_window_keeps_the_samples_around_it(tmp_path: Path) -> None:
    fake = FakeProc(tmp_path / "proc")
    fake.process(10, 1, 0)
    samples = []
    ticks = 0
    for second in range(10):
        ticks += CLK_TCK // 2 if second > 5 else CLK_TCK // 10  # 0.1 core, then 0.5 core after second 5
        fake.process(10, 1, ticks)
        fake.tick(busy=CLK_TCK, idle=CLK_TCK)
        samples.append(sample_at(fake, {"app": [10]}, wall=100.0 + second))
    assert [s.wall for s in cpu.window(samples, 104.5, 107.2)] == [104.0, 105.0, 106.0, 107.0, 108.0]
    whole = cpu.usage(samples, ncpu=2)
    late = cpu.usage(samples, ncpu=2, t0=105.0, t1=109.0)
    assert whole is not None and late is not None
    assert late.groups["app"].cores == pytest.approx(0.5) and whole.groups["app"].cores < late.groups["app"].cores
    assert cpu.usage(samples[:1], ncpu=2) is None
    line = cpu.timeline(samples)
    assert len(line) == 9 and line[-1][1]["app"] == pytest.approx(0.5)
    assert line[-1][1]["others"] == pytest.approx(0.5) and line[-1][1]["steal"] == 0.0


def usage(groups: dict[str, tuple[float, float]], busy: float, steal: float = 0.0, ncpu: int = 2) -> Usage:
    """Figures as cpu.usage() returns them: group -> (cores, busiest process's cores)."""
    made = {name: GroupUsage(cores, 2, 100 + i, top) for i, (name, (cores, top)) in enumerate(groups.items())}
    others = max(0.0, busy - sum(g.cores for g in made.values()))
    return Usage(15.0, ncpu, made, busy, steal, others, 1.0, 1.0)


def test_a_worker_at_its_core_saturates_the_app() -> None:
    found = cpu.attribute(usage({"app": (1.0, 0.95), "nginx": (0.2, 0.1), "generator": (0.3, 0.2)}, busy=1.5))
    assert found.saturated == ["app"] and not found.generator_saturated and not found.machine_saturated
    assert found.text == "app (pid 100 at 95% of a core)"


def test_the_generator_comes_first_and_is_flagged() -> None:
    found = cpu.attribute(usage({"app": (1.7, 0.9), "generator": (0.9, 0.85)}, busy=1.95))
    assert found.saturated == ["generator", "app", "machine"]
    assert found.generator_saturated and found.machine_saturated
    assert found.text.startswith("the load generator (pid 101 at 85% of a core): this run understates the stack")


def test_a_whole_group_across_cores_saturates() -> None:
    found = cpu.attribute(usage({"postgres": (1.7, 0.3), "app": (0.2, 0.1)}, busy=1.9))
    assert found.saturated == ["postgres", "machine"]
    assert "postgres (1.70 of 2 cores)" in found.text


def test_a_machine_busy_with_other_work_says_so() -> None:
    found = cpu.attribute(usage({"app": (0.3, 0.2), "generator": (0.2, 0.1)}, busy=1.7, steal=0.2))
    assert found.saturated == ["machine"]
    assert "0.20 stolen by other guests" in found.text
    assert "mostly other work (1.40 cores outside this run): re-measure on a quiet machine" in found.text


def test_nothing_saturated_points_beyond_cpu() -> None:
    found = cpu.attribute(usage({"app": (0.6, 0.35), "redis": (0.05, 0.05)}, busy=0.8))
    assert found.saturated == [] and "no CPU saturated" in found.text and "pid 100 at 35%" in found.text


def test_usage_round_trips_through_json_figures() -> None:
    u = usage({"app": (0.6, 0.35)}, busy=0.8)
    assert Usage.from_dict(u.as_dict()) == u
    assert u.as_dict()["machine_load"] == 0.4


def test_the_real_proc_sees_a_busy_child(tmp_path: Path) -> None:
    """The sampler on this machine's /proc: a child spinning for ~1.5 s shows in its group, near one core."""
    pid = os.fork()
    if pid == 0:  # the child: spin, then leave without running the parent's cleanup
        end = time.monotonic() + 1.5
        while time.monotonic() < end:
            pass
        os._exit(0)
    sampler = cpu.Sampler({"spinner": [pid]}, interval=0.2).start()
    time.sleep(1.0)
    samples = sampler.stop()
    os.waitpid(pid, 0)
    u = cpu.usage(samples, ncpu=cpu.cpu_count())
    assert u is not None and u.groups["spinner"].busiest_pid == pid
    assert 0.05 < u.groups["spinner"].cores <= 1.1  # a shared machine may not give it the whole core
