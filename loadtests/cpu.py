"""CPU of the stack's processes and of the load generator, sampled from /proc during a run, and what saturated.

The runner takes a sample every second while Locust runs: utime + stime of every process (/proc/<pid>/stat),
the machine's busy, idle and steal time (/proc/stat) and the load average (/proc/loadavg). A group is a root
pid and its descendants at each sample: `app` (gunicorn's master and workers), `postgres` (postmaster and
backends), `redis`, `nginx` (master and workers) from .stack/state.json, and `generator` (the locust process
and, in a distributed run, the workers it forked). `others` is the machine's busy time that no group accounts
for (other people's jobs on a shared machine, the runner itself); `steal` is time the hypervisor gave to
other guests: both say how busy the machine was besides this run.

`attribute()` says what saturated, from the figures over a window (a step of the capacity search, a run):

- a process at >= 80% of one core: gunicorn's gevent workers, Redis, Nginx workers and Locust processes each
  run on one thread, so one core is their ceiling;
- a group at >= 80% of the machine's cores;
- the machine: busy + steal >= 90% of its cores (the stack and the generator share them).

The load generator comes first: when it saturated, every other figure of that run understates the stack.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

PROC = Path("/proc")
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
GROUPS = ("app", "postgres", "redis", "nginx", "generator")
PROCESS_THRESHOLD = 0.8  # of one core
GROUP_THRESHOLD = 0.8  # of the machine's cores
MACHINE_THRESHOLD = 0.9  # busy + steal, of the machine's cores
GENERATOR_FLAG = 0.8  # a Locust process above this share of a core is flagged in every report


def cpu_count() -> int:
    """Cores this process may run on (the affinity mask, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    start: int  # starttime in clock ticks since boot: tells a recycled pid apart
    ticks: int  # utime + stime


@dataclass(frozen=True)
class Machine:
    busy: int  # user + nice + system + irq + softirq ticks, all cores
    idle: int  # idle + iowait
    steal: int


@dataclass(frozen=True)
class Sample:
    wall: float  # time.time() when taken
    procs: dict[int, Proc]
    machine: Machine
    loadavg: float  # 1-minute load average
    members: dict[str, frozenset[int]] = field(default_factory=dict)  # group -> pids at this sample


def parse_stat(pid: int, text: str) -> Proc:
    """/proc/<pid>/stat: the command may hold spaces and parentheses, so fields are counted from the last ')'."""
    fields = text[text.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state): ppid is field 4, utime 14, stime 15, starttime 22.
    return Proc(pid=pid, ppid=int(fields[1]), start=int(fields[19]), ticks=int(fields[11]) + int(fields[12]))


def parse_machine(text: str) -> Machine:
    """The aggregate `cpu` line of /proc/stat."""
    for line in text.splitlines():
        if line.startswith("cpu "):
            values = [int(v) for v in line.split()[1:]]
            values += [0] * (8 - len(values))
            user, nice, system, idle, iowait, irq, softirq, steal = values[:8]
            return Machine(busy=user + nice + system + irq + softirq, idle=idle + iowait, steal=steal)
    raise ValueError("no aggregate cpu line in /proc/stat")


def read_procs(root: Path = PROC) -> dict[int, Proc]:
    procs: dict[int, Proc] = {}
    for entry in root.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            procs[int(entry.name)] = parse_stat(int(entry.name), (entry / "stat").read_text())
        except (OSError, ValueError, IndexError):  # gone meanwhile, or unreadable
            continue
    return procs


def members(procs: Mapping[int, Proc], roots: Iterable[int]) -> frozenset[int]:
    """The roots that are alive and all their descendants."""
    children: dict[int, list[int]] = {}
    for proc in procs.values():
        children.setdefault(proc.ppid, []).append(proc.pid)
    found: set[int] = set()
    todo = [pid for pid in roots if pid in procs]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, ()))
    return frozenset(found)


def take_sample(roots: Mapping[str, Sequence[int]], root: Path = PROC) -> Sample:
    procs = read_procs(root)
    machine = parse_machine((root / "stat").read_text())
    try:
        loadavg = float((root / "loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        loadavg = 0.0
    groups = {name: members(procs, pids) for name, pids in roots.items()}
    return Sample(time.time(), procs, machine, loadavg, groups)


class Sampler:
    """A daemon thread taking a Sample every `interval` seconds until stop(); roots may be added meanwhile
    (the generator's pid once locust has started)."""

    def __init__(self, roots: Mapping[str, Sequence[int]], interval: float = 1.0, root: Path = PROC) -> None:
        self.roots: dict[str, list[int]] = {name: list(pids) for name, pids in roots.items()}
        self.interval = interval
        self.root = root
        self.samples: list[Sample] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)

    def add_root(self, group: str, pid: int) -> None:
        with self._lock:
            self.roots.setdefault(group, []).append(pid)
        self._sample()  # a sample with the new root right away: the window starts there

    def _sample(self) -> None:
        with self._lock:
            roots = {name: list(pids) for name, pids in self.roots.items()}
        try:
            sample = take_sample(roots, self.root)
        except OSError:
            return
        with self._lock:
            self.samples.append(sample)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def stop(self) -> list[Sample]:
        self._stop.set()
        self._thread.join(timeout=10)
        self._sample()
        with self._lock:
            return list(self.samples)


# --- figures ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GroupUsage:
    cores: float  # mean cores used over the window
    processes: int  # distinct processes seen in the group
    busiest_pid: int | None
    busiest_cores: float  # the busiest single process, in cores (1.0 = one core flat out)


@dataclass(frozen=True)
class Usage:
    elapsed_s: float
    ncpu: int
    groups: dict[str, GroupUsage]
    busy_cores: float  # the whole machine
    steal_cores: float
    others_cores: float  # busy time no group accounts for
    loadavg_max: float
    loadavg_mean: float

    @property
    def machine_load(self) -> float:
        """(busy + steal) / cores."""
        return (self.busy_cores + self.steal_cores) / self.ncpu if self.ncpu else 0.0

    def generator_busiest(self) -> float:
        group = self.groups.get("generator")
        return group.busiest_cores if group else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "machine_load": round(self.machine_load, 3)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Usage:
        groups = {name: GroupUsage(**g) for name, g in data["groups"].items()}
        fields = {k: data[k] for k in cls.__dataclass_fields__ if k != "groups"}
        return cls(groups=groups, **fields)


def _pair_ticks(a: Sample, b: Sample, pids: Iterable[int]) -> dict[int, int]:
    """Ticks each pid used between samples a and b (a pid new since a counts from its start)."""
    out = {}
    for pid in pids:
        now = b.procs.get(pid)
        if now is None:
            continue
        before = a.procs.get(pid)
        out[pid] = now.ticks - (before.ticks if before is not None and before.start == now.start else 0)
    return out


def window(samples: Sequence[Sample], t0: float | None = None, t1: float | None = None) -> list[Sample]:
    """The samples within [t0, t1] plus the one just before and just after (so the window is covered)."""
    ordered = sorted(samples, key=lambda s: s.wall)
    if t0 is None and t1 is None:
        return ordered
    lo = t0 if t0 is not None else float("-inf")
    hi = t1 if t1 is not None else float("inf")
    first = max((i for i, s in enumerate(ordered) if s.wall <= lo), default=0)
    last = min((i for i, s in enumerate(ordered) if s.wall >= hi), default=len(ordered) - 1)
    return ordered[first : last + 1]


def usage(samples: Sequence[Sample], ncpu: int, t0: float | None = None, t1: float | None = None) -> Usage | None:
    """Mean CPU per group, per busiest process and for the machine over [t0, t1]; None with < 2 samples."""
    chosen = window(samples, t0, t1)
    if len(chosen) < 2:
        return None
    elapsed = chosen[-1].wall - chosen[0].wall
    if elapsed <= 0:
        return None
    names = sorted({name for s in chosen for name in s.members})
    per_pid: dict[str, dict[int, int]] = {name: {} for name in names}
    busy = steal = 0
    loads = [s.loadavg for s in chosen]
    for a, b in itertools.pairwise(chosen):
        busy += b.machine.busy - a.machine.busy
        steal += b.machine.steal - a.machine.steal
        for name in names:
            for pid, ticks in _pair_ticks(a, b, b.members.get(name, ())).items():
                per_pid[name][pid] = per_pid[name].get(pid, 0) + ticks

    def cores(ticks: float) -> float:
        return round(ticks / CLK_TCK / elapsed, 3)

    groups = {}
    for name in names:
        used = per_pid[name]
        busiest = max(used, key=lambda pid: used[pid], default=None)
        groups[name] = GroupUsage(
            cores=cores(sum(used.values())),
            processes=len(used),
            busiest_pid=busiest,
            busiest_cores=cores(used[busiest]) if busiest is not None else 0.0,
        )
    busy_cores = cores(busy)
    return Usage(
        elapsed_s=round(elapsed, 2),
        ncpu=ncpu,
        groups=groups,
        busy_cores=busy_cores,
        steal_cores=cores(steal),
        others_cores=round(max(0.0, busy_cores - sum(g.cores for g in groups.values())), 3),
        loadavg_max=max(loads),
        loadavg_mean=round(sum(loads) / len(loads), 2),
    )


def timeline(samples: Sequence[Sample]) -> list[tuple[float, dict[str, float]]]:
    """Cores per group (and `others`, `steal`) between consecutive samples: (wall time of the later, cores)."""
    ordered = sorted(samples, key=lambda s: s.wall)
    out = []
    for a, b in itertools.pairwise(ordered):
        dt = b.wall - a.wall
        if dt <= 0:
            continue
        row = {name: sum(_pair_ticks(a, b, pids).values()) / CLK_TCK / dt for name, pids in b.members.items()}
        busy = (b.machine.busy - a.machine.busy) / CLK_TCK / dt
        row["others"] = max(0.0, busy - sum(row.values()))
        row["steal"] = (b.machine.steal - a.machine.steal) / CLK_TCK / dt
        out.append((b.wall, row))
    return out


# --- attribution -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Attribution:
    saturated: list[str]  # group names ("machine" too), the one to look at first first
    generator_saturated: bool
    machine_saturated: bool
    text: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _share(u: Usage) -> str:
    parts = sorted(((g.cores, name) for name, g in u.groups.items()), reverse=True)
    parts.append((u.others_cores, "others"))
    return ", ".join(f"{name} {value:.2f}" for value, name in parts if value >= 0.005) or "nothing"


def attribute(
    u: Usage,
    process_threshold: float = PROCESS_THRESHOLD,
    group_threshold: float = GROUP_THRESHOLD,
    machine_threshold: float = MACHINE_THRESHOLD,
) -> Attribution:
    """What saturated over a window (see the module docstring), as group names and one sentence."""
    found: list[tuple[float, str, str]] = []  # (utilization, group, why)
    for name, g in u.groups.items():
        process_util = g.busiest_cores
        group_util = g.cores / u.ncpu if u.ncpu else 0.0
        why: list[str] = []
        if process_util >= process_threshold:
            why.append(f"pid {g.busiest_pid} at {process_util:.0%} of a core")
        if group_util >= group_threshold:
            why.append(f"{g.cores:.2f} of {u.ncpu} cores")
        if why:
            found.append((max(process_util, group_util), name, ", ".join(why)))
    found.sort(key=lambda f: (f[1] != "generator", -f[0]))
    machine = u.machine_load >= machine_threshold
    generator = any(name == "generator" for _, name, _ in found)
    texts: list[str] = []
    for _, name, reason in found:
        if name == "generator":
            texts.append(f"the load generator ({reason}): this run understates the stack; raise --processes")
        else:
            texts.append(f"{name} ({reason})")
    if machine:
        steal = f", {u.steal_cores:.2f} stolen by other guests" if u.steal_cores >= 0.05 else ""
        outside = u.others_cores + u.steal_cores
        busiest_group = max((g.cores for g in u.groups.values()), default=0.0)
        elsewhere = (
            f"; mostly other work ({outside:.2f} cores outside this run): re-measure on a quiet machine"
            if outside > busiest_group
            else ""
        )
        texts.append(
            f"the machine's CPU ({u.machine_load:.0%} of {u.ncpu} cores busy{steal}; cores by group: {_share(u)}"
            f"{elsewhere})"
        )
    if not texts:
        top = max(u.groups.items(), key=lambda kv: kv[1].busiest_cores, default=None)
        where = f"; busiest process: {top[0]} pid {top[1].busiest_pid} at {top[1].busiest_cores:.0%}" if top else ""
        texts.append(
            f"no CPU saturated (machine {u.machine_load:.0%} busy{where}; cores by group: "
            f"{_share(u)}): look beyond CPU (connection limits, pool waits, locks, I/O)"
        )
    saturated = [name for _, name, _ in found] + (["machine"] if machine else [])
    return Attribution(saturated, generator, machine, "; ".join(texts))


def stack_roots(state: Mapping[str, Any]) -> dict[str, list[int]]:
    """The stack's group roots from its state.json (services.<name>.pid)."""
    services = state.get("services", {})
    return {name: [int(services[name]["pid"])] for name in GROUPS if services.get(name, {}).get("pid")}
