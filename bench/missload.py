"""CPU per cache miss and misses/s at a fixed concurrency, on a running stack (`make stack`).

    python -m bench.missload --urls bench/results/miss.txt [--tree NAME=PATH ...] [--rounds 3]

One gunicorn (gunicorn.conf.py, one gevent worker) per tree is started against the stack's
PostgreSQL and Redis; the worker, every PostgreSQL process and Redis are pinned to core 0 and wrk
(one thread, -c CONNECTIONS) to core 1. Each run empties the stack's Redis, warms the worker on
the first --warm URLs of the list (pool connections, prepared statements), then drives the next
ones for --duration s: every request is a distinct URL (bench/compare/urls.py), so every answer is
a miss, which the run checks. CPU comes from /proc (utime + stime): the worker, every PostgreSQL
process (exited backends through the postmaster's children counters) and Redis, divided by the
misses answered. Trees run interleaved, round by round, on the same URLs; the table gives
per-tree medians, and how busy the machine was (other processes' share of both cores) during
the measured windows, because wall-clock figures mean little on a busy machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis

from devstack.servers import free_port
from devstack.stack import children, end_session, wait_until

REPO = Path(__file__).resolve().parent.parent
GUNICORN = str(Path(sys.executable).parent / "gunicorn")
LUA = REPO / "bench" / "compare" / "urls.lua"
TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str]:
    raw = Path(f"/proc/{pid}/stat").read_text()
    return raw[raw.rindex(")") + 2 :].split()


def cpu_seconds(pid: int, with_children: bool = False) -> float:
    """utime + stime of a process (+ its reaped children's), in seconds; 0 if it is gone."""
    try:
        fields = _stat(pid)
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    if with_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / TICK


def postgres_cpu(postmaster: int) -> float:
    """Every process of the PostgreSQL server: the postmaster (with its reaped children) and its
    live children (backends, background workers)."""
    return cpu_seconds(postmaster, with_children=True) + sum(cpu_seconds(pid) for pid in children(postmaster))


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies over all CPUs, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def pin(pid: int, cpus: set[int]) -> None:
    """Pin every thread of a process (and what it forks afterwards) to `cpus`."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            os.sched_setaffinity(int(task.name), cpus)


@contextlib.contextmanager
def gunicorn(tree: Path, state: dict[str, Any], env: dict[str, str], log: Path) -> Iterator[tuple[int, int]]:
    """One gunicorn (one gevent worker) from `tree`, pinned to core 0; yields (port, worker pid)."""
    port = free_port()
    full_env = {
        **os.environ,
        **state["env"],
        "WEB_CONCURRENCY": "1",
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        "PYTHONUNBUFFERED": "1",
        **env,
    }
    argv = ["taskset", "-c", "0", GUNICORN, "-c", str(tree / "gunicorn.conf.py"), "app:create_app()"]
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, cwd=tree, env=full_env, stdout=out, stderr=out, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}/healthz"
        ok = wait_until(lambda: proc.poll() is not None or _up(url), 60)
        if not ok or proc.poll() is not None:
            raise RuntimeError(f"gunicorn from {tree} did not start:\n{log.read_text()[-3000:]}")
        (worker,) = children(proc.pid)
        yield port, worker
    finally:
        end_session(proc)  # type: ignore[arg-type]


def _up(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def wrk(port: int, script: Path, first: int, last: int, seconds: float, connections: int) -> dict[str, Any]:
    """One wrk run on core 1 over URL lines first..last; its rate, latency and answers."""
    argv = ["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", "-s", str(script)]
    argv += [f"http://127.0.0.1:{port}", "--", "1", str(first), str(last)]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=True).stdout
    answers = {m[0]: int(m[1]) for m in re.findall(r"^answers (\S+ \S+) (\d+)$", out, re.MULTILINE)}
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = re.search(r"50%\s+(\S+)", out)
    return {"rate": rate, "answers": answers, "exhausted": "EXHAUSTED" in out, "p50": p50.group(1) if p50 else "?"}


def one_run(
    name: str, tree: Path, state: dict[str, Any], env: dict[str, str], args: argparse.Namespace, script: Path
) -> dict[str, Any]:
    cache = redis.Redis.from_url(state["redis_url"])
    postmaster = int(state["services"]["postgres"]["pid"])
    redis_pid = int(state["services"]["redis"]["pid"])
    for pid in [postmaster, *children(postmaster)]:
        pin(pid, {0})
    pin(redis_pid, {0})
    log = args.logs / f"gunicorn-{name}.log"
    with gunicorn(tree, state, env, log) as (port, worker):
        cache.flushdb()  # this stack's Redis only: every URL of the run is a miss
        wrk(port, script, 1, args.warm, args.warm_seconds, args.connections)

        def sample() -> tuple[float, float, float, tuple[int, int]]:
            return postgres_cpu(postmaster), cpu_seconds(worker), cpu_seconds(redis_pid), machine_jiffies()

        pg0, app0, redis0, machine0 = sample()
        run = wrk(port, script, args.warm + 1, 10**9, args.duration, args.connections)
        pg1, app1, redis1, machine1 = sample()
    answered = sum(run["answers"].values())
    misses = run["answers"].get("200 miss", 0)
    busy = (machine1[0] - machine0[0]) / max(1, machine1[1] - machine0[1])  # share of both cores
    ours = (app1 - app0) + (pg1 - pg0) + (redis1 - redis0)
    window = (machine1[1] - machine0[1]) / TICK / (os.cpu_count() or 1)
    return {
        "tree": name,
        "misses_per_s": run["rate"],
        "p50": run["p50"],
        "answers": run["answers"],
        "all_misses": misses == answered and not run["exhausted"],
        "cpu_ms_per_miss": {
            "app": 1000 * (app1 - app0) / max(1, answered),
            "postgres": 1000 * (pg1 - pg0) / max(1, answered),
            "redis": 1000 * (redis1 - redis0) / max(1, answered),
        },
        "machine_busy": busy,
        # Cores' worth of CPU used by everything else on the machine during the window (wrk included).
        "others_cores": max(0.0, busy * (os.cpu_count() or 1) - ours / window),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.missload", description=__doc__.splitlines()[0])
    parser.add_argument("--urls", type=Path, required=True, help="bench/compare/urls.py's OUT.txt")
    parser.add_argument("--state", type=Path, default=REPO / ".stack" / "state.json")
    parser.add_argument("--tree", action="append", default=[], help="NAME=PATH[:ENV=VALUE,...] (default: this tree)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--warm", type=int, default=600, help="URLs used to warm each worker")
    parser.add_argument("--warm-seconds", type=float, default=3.0)
    parser.add_argument("--logs", type=Path, default=REPO / "bench" / "results")
    parser.add_argument("--json", type=Path, help="append every run as a JSON line here")
    args = parser.parse_args(argv)
    args.logs.mkdir(parents=True, exist_ok=True)
    state = json.loads(args.state.read_text())
    script = args.logs / "missload.lua"
    script.write_text(LUA.read_text().replace("{{URLS_FILE}}", str(args.urls.resolve())))
    trees: list[tuple[str, Path, dict[str, str]]] = []
    for spec in args.tree or [f"this={REPO}"]:
        name, _, rest = spec.partition("=")
        path, _, env_spec = rest.partition(":")
        env = dict(item.split("=", 1) for item in env_spec.split(",") if item)
        trees.append((name, Path(path).resolve(), env))
    runs: list[dict[str, Any]] = []
    for round_ in range(args.rounds):
        order = trees if round_ % 2 == 0 else list(reversed(trees))  # alternate who goes first
        for name, tree, env in order:
            result = one_run(name, tree, state, env, args, script)
            result["round"] = round_
            runs.append(result)
            print(json.dumps(result), flush=True)
            if args.json:
                with args.json.open("a") as out:
                    out.write(json.dumps(result) + "\n")
    header = ("tree", "misses/s", "app ms", "pg ms", "redis ms", "busy", "others")
    print("\n{:<16} {:>9} {:>7} {:>7} {:>8} {:>5} {:>6}  all misses".format(*header))
    for name, _, _ in trees:
        mine = [r for r in runs if r["tree"] == name]

        def med(key: str, sub: str | None = None, rows: list[dict[str, Any]] = mine) -> float:
            return statistics.median(r[key][sub] if sub else r[key] for r in rows)

        print(
            f"{name:<16} {med('misses_per_s'):>9.1f} {med('cpu_ms_per_miss', 'app'):>7.3f} "
            f"{med('cpu_ms_per_miss', 'postgres'):>7.3f} {med('cpu_ms_per_miss', 'redis'):>8.3f} "
            f"{med('machine_busy'):>5.0%} {med('others_cores'):>6.2f}  {all(r['all_misses'] for r in mine)}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
