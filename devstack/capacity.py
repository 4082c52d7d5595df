"""Per-request costs for the capacity model (issue 15, docs/scaling.md), measured on the cluster.

    make cluster && make cluster-measure         # python -m devstack.capacity [--duration 8 ...]

Each workload runs bounded (wrk for --duration seconds, or a fixed number of writes) while the
CPU time of every tier is read from /proc (utime + stime of each server's process group):
Nginx, the app nodes, the PostgreSQL primary, the replica, Redis and the Sentinels. Reported
per request, in CPU microseconds (time on the CPU from /proc/<pid>/task/*/schedstat, less each
tier's idle rate measured first with no load), with the requests/s seen (wall clock: noisy on
a shared machine) and how busy the machine was (all cores, and the part that was neither our
servers nor our client: other people's work).

Workloads:
  edge-hit        Nginx microcache HIT (the edge alone)
  edge-proxied    through Nginx with the microcache bypassed (Authorization header): Nginx's
                  two proxy hops plus an app hit
  hit             an app node directly, one hot page: an in-process (near cache) hit
  304             an app node directly, If-None-Match with the page's ETag
  miss-post       an app node directly, /posts/{id} over ids nobody asked for yet (2 statements)
  miss-page       an app node directly, /posts?ids= 20 consecutive ids never asked for (a
                  feed-sized page: 2 statements, 20 rows)
  replica-miss-*  the same misses on a temporary app node whose DATABASE_URL is the replica:
                  the replica's CPU per page, i.e. what reads moved to replicas cost them
  write-post      POST /api/v1/posts through Nginx (publish: the heaviest write)
  write-comment   POST /api/v1/posts/{id}/comments through Nginx
  redis-benchmark GET/SET/INCR ops/s of the current Redis primary (redis-benchmark, db 15)

The temporary node and the editors (for the writes) are created here; the writes stay in the
database (a throwaway cluster's). Results: a Markdown table on stdout, JSON in --out.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import os
import re
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from devstack.cluster import DEFAULT_DIR, Cluster, sentinel_primary
from devstack.serve_bench import parse_wrk
from devstack.servers import HOST, free_port
from devstack.stack import REPO, VENV_BIN, start_gunicorn, stop_group

TIERS = ("nginx", "app", "postgres", "postgres-replica", "redis", "sentinel")
HZ = os.sysconf("SC_CLK_TCK")
BULK = 20  # ids per miss-page request: a feed page's worth


@dataclass
class Result:
    name: str
    requests: int
    seconds: float
    per_second: float
    cpu_us_per_request: dict[str, float]
    cpu_pct: dict[str, float]
    client_cpu_pct: float
    raw_cpu_pct: dict[str, float]
    machine_busy_pct: float
    others_busy_pct: float
    non_2xx: int = 0
    errors: str = ""
    latency_ms: dict[str, float] = field(default_factory=dict)
    note: str = ""


def _process_cpu(pid: int) -> float:
    """CPU seconds of every thread of ``pid``: /proc/<pid>/task/*/schedstat (nanoseconds on the
    CPU), else utime + stime from /proc/<pid>/stat (whole clock ticks, 10 ms: too coarse for a
    few hundred requests)."""
    total_ns = 0
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError, ValueError, IndexError):
                total_ns += int((task / "schedstat").read_text().split()[0])
    except OSError:
        return 0.0
    if total_ns:
        return total_ns / 1e9
    with contextlib.suppress(OSError, IndexError, ValueError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / HZ
    return 0.0


def _parents() -> dict[int, int]:
    """pid -> ppid of every live process (one pass over /proc)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
    return parents


def _tree(root: int, parents: Mapping[int, int]) -> list[int]:
    """``root`` and its live descendants. Not the process group: PostgreSQL's backends and
    auxiliary processes each call setsid(), so only the parent links find them."""
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = [], [root] if root in parents else []
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _machine() -> tuple[int, int, int]:
    """(busy, total) jiffies over all cores, and the core count."""
    lines = Path("/proc/stat").read_text().splitlines()
    values = [int(v) for v in lines[0].split()[1:]]
    cores = sum(1 for line in lines if re.match(r"cpu\d+ ", line))
    return sum(values) - values[3] - values[4], sum(values), cores


def _client_cpu() -> float:
    """CPU of this process and its reaped children (wrk, redis-benchmark): the client side."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


class Meter:
    """CPU seconds per tier (each server's process tree) over one workload, less each tier's
    idle rate (``baseline``, CPU seconds per second with no load: Sentinel and Redis crons, the
    app's outbox ticks, PostgreSQL's background workers)."""

    def __init__(self, groups: Mapping[str, list[int]]) -> None:
        self.groups = groups
        self.baseline: dict[str, float] = dict.fromkeys(groups, 0.0)

    def measure_idle(self, seconds: float) -> dict[str, float]:
        with self.window() as w:
            time.sleep(seconds)
        self.baseline = {t: c / w["seconds"] for t, c in w["raw_cpu"].items()}
        return self.baseline

    def read(self) -> dict[str, dict[int, float]]:
        """CPU seconds of every live process of each tier, by pid."""
        parents = _parents()
        return {
            tier: {pid: _process_cpu(pid) for root in roots for pid in _tree(root, parents)}
            for tier, roots in self.groups.items()
        }

    @staticmethod
    def spent(before: Mapping[int, float], after: Mapping[int, float]) -> float:
        """CPU used between two reads by the processes alive at the second (one born in between
        counts whole). A process that exited in between (an autovacuum worker, a closed
        connection's backend) is left out: subtracting its whole life would be worse."""
        return sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())

    @contextlib.contextmanager
    def window(self) -> Iterator[dict[str, Any]]:
        out: dict[str, Any] = {}
        cpu0, machine0, client0, t0 = self.read(), _machine(), _client_cpu(), time.monotonic()
        yield out
        cpu1, machine1, client1, t1 = self.read(), _machine(), _client_cpu(), time.monotonic()
        busy, total, cores = machine1[0] - machine0[0], machine1[1] - machine0[1], machine1[2]

        raw = {t: self.spent(cpu0[t], cpu1[t]) for t in cpu1}
        ours = sum(raw.values()) + (client1 - client0)
        out.update(
            seconds=t1 - t0,
            raw_cpu=raw,
            cpu={t: max(0.0, raw[t] - self.baseline.get(t, 0.0) * (t1 - t0)) for t in raw},
            client=client1 - client0,
            machine_busy_pct=100 * busy / max(1, total),
            # Busy core-seconds that were neither our servers nor our client, as % of all cores.
            others_busy_pct=max(0.0, 100 * (busy / HZ - ours) / max(1e-9, (t1 - t0) * cores)),
        )


def _result(name: str, requests: int, w: dict[str, Any], **extra: Any) -> Result:
    seconds = w["seconds"]
    return Result(
        name=name,
        requests=requests,
        seconds=round(seconds, 2),
        per_second=round(requests / seconds, 1),
        cpu_us_per_request={t: round(1e6 * c / max(1, requests), 1) for t, c in w["cpu"].items()},
        cpu_pct={t: round(100 * c / seconds, 1) for t, c in w["cpu"].items()},
        client_cpu_pct=round(100 * w["client"] / seconds, 1),
        raw_cpu_pct={t: round(100 * c / seconds, 2) for t, c in w["raw_cpu"].items()},
        machine_busy_pct=round(w["machine_busy_pct"], 1),
        others_busy_pct=round(w["others_busy_pct"], 1),
        **extra,
    )


def wrk(meter: Meter, name: str, url: str, args: argparse.Namespace, *extra: str, note: str = "") -> Result:
    argv = ["wrk", "-t1", f"-c{args.connections}", f"-d{args.duration}s", "--latency", *extra, url]
    with meter.window() as w:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=args.duration + 60)
    if res.returncode:
        raise RuntimeError(f"wrk failed for {name}:\n{res.stdout}{res.stderr}")
    parsed = parse_wrk(res.stdout)
    result = _result(
        name,
        parsed["requests"],
        w,
        non_2xx=parsed["non_2xx"],
        errors=parsed["socket_errors"],
        latency_ms={"p50": parsed["p50_ms"], "p99": parsed["p99_ms"]},
        note=note,
    )
    print(f"capacity: {name}: {result.per_second:,.0f}/s, cpu us/req {result.cpu_us_per_request}", file=sys.stderr)
    return result


def lua_sequence(directory: Path, name: str, start: int, bulk: int) -> Path:
    """A wrk script asking for ids start, start+1, ... (one id, or ``bulk`` consecutive ones)."""
    path = directory / f"{name}.lua"
    if bulk == 1:
        body = 'return wrk.format("GET", "/api/v1/posts/" .. id)'
    else:
        body = (
            f"local parts = {{}}\n  for i = 0, {bulk - 1} do parts[#parts + 1] = tostring(id + i) end\n"
            '  return wrk.format("GET", "/api/v1/posts?ids=" .. table.concat(parts, ","))'
        )
    path.write_text(f"local id = {start - 1}\nrequest = function()\n  id = id + 1\n  {body}\nend\n")
    return path


def fetch(port: int, path: str, method: str = "GET", body: Any = None, headers: Mapping[str, str] | None = None) -> Any:
    conn = http.client.HTTPConnection(HOST, port, timeout=15)
    try:
        data = None if body is None else json.dumps(body).encode()
        hdrs = {"Content-Type": "application/json", **(headers or {})} if data else dict(headers or {})
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def make_editors(state: Mapping[str, Any], count: int, nginx_port: int) -> list[str]:
    """``count`` editors (flask create-editor on the primary) and an access token for each."""
    env = {**os.environ, **state["env"]}
    tokens = []
    for _ in range(count):
        username, password = f"capacity_{secrets.token_hex(4)}", secrets.token_urlsafe(18)
        subprocess.run(
            [str(VENV_BIN / "flask"), "--app", "app", "create-editor", username],
            input=f"{password}\n{password}\n",
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        status, _, raw = fetch(nginx_port, "/api/v1/auth/token", "POST", {"username": username, "password": password})
        if status != 200:
            raise RuntimeError(f"sign-in failed ({status}): {raw[:300]!r}")
        tokens.append(json.loads(raw)["access_token"])
    return tokens


def writes(
    meter: Meter, name: str, port: int, tokens: list[str], count: int, make: Callable[[int], tuple[str, Any]]
) -> Result:
    """``count`` writes through Nginx by 4 client threads, one editor per ``count/len(tokens)``."""
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    next_index = iter(range(count))

    def worker() -> None:
        while True:
            with lock:
                i = next(next_index, None)
            if i is None:
                return
            path, body = make(i)
            token = tokens[i * len(tokens) // count]
            status, _, _ = fetch(port, path, "POST", body, {"Authorization": f"Bearer {token}"})
            with lock:
                statuses[status] = statuses.get(status, 0) + 1

    threads = [threading.Thread(target=worker) for _ in range(4)]
    with meter.window() as w:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
    ok = statuses.get(201, 0)
    result = _result(name, count, w, non_2xx=count - ok, note=f"statuses {statuses}")
    print(f"capacity: {name}: {result.per_second:,.0f}/s, cpu us/req {result.cpu_us_per_request}", file=sys.stderr)
    return result


def redis_benchmark(meter: Meter, port: int, requests: int) -> list[Result]:
    results = []
    for op in ("get", "set", "incr"):
        argv = ["redis-benchmark", "-h", HOST, "-p", str(port), "--dbnum", "15", "-c", "16", "-n", str(requests)]
        with meter.window() as w:
            res = subprocess.run([*argv, "-t", op, "--csv"], capture_output=True, text=True, timeout=120)
        if res.returncode:
            raise RuntimeError(f"redis-benchmark failed:\n{res.stdout}{res.stderr}")
        result = _result(f"redis {op.upper()}", requests, w, note="redis-benchmark -c 16, no pipelining, db 15")
        results.append(result)
        print(f"capacity: redis {op}: {result.per_second:,.0f}/s", file=sys.stderr)
    subprocess.run(["redis-cli", "-h", HOST, "-p", str(port), "-n", "15", "FLUSHDB"], capture_output=True, timeout=30)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.capacity", description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="the running cluster (default .cluster/)")
    parser.add_argument("--duration", type=int, default=8, help="seconds per wrk workload")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--writes", type=int, default=120, help="writes per write workload")
    parser.add_argument("--redis-requests", type=int, default=100_000)
    parser.add_argument(
        "--ids-per-workload", type=int, default=8000, help="fresh post ids set aside for each miss workload"
    )
    parser.add_argument("--idle", type=float, default=5.0, help="seconds of no load: each tier's background CPU")
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "capacity.json")
    args = parser.parse_args(argv)
    for tool in ("wrk", "redis-benchmark", "redis-cli"):
        if not shutil.which(tool):
            print(f"capacity: {tool} missing (bash scripts/ensure-servers.sh --bench)", file=sys.stderr)
            return 2
    cluster = Cluster(args.dir)
    state = cluster.read_state()
    if not state or not state.get("complete") or not all(cluster.running(state).values()):
        print(f"capacity: no complete running cluster in {cluster.root}; run `make cluster` first", file=sys.stderr)
        return 2
    services = state["services"]
    groups: dict[str, list[int]] = {tier: [] for tier in TIERS}
    for info in services.values():
        tier = {"postgres": "postgres", "app": "app"}.get(info["kind"], info["kind"])
        groups[tier].append(int(info["pid"]))
    meter = Meter(groups)
    nginx_port = int(services["nginx"]["port"])
    app_port = int(services["app-1"]["port"])
    replica_url = state["env"]["DATABASE_REPLICA_URLS"].split(",")[0]
    master = state["settings"]["REDIS_SENTINEL_MASTER"]
    redis_primary = sentinel_primary(int(services["sentinel-1"]["port"]), master)
    if redis_primary is None:
        raise SystemExit("capacity: the Sentinels name no Redis primary")

    with psycopg.connect(state["env"]["DATABASE_URL"], autocommit=True) as conn:
        row = conn.execute("SELECT min(id), max(id), count(*) FROM posts").fetchone()
        assert row is not None
        low, high, posts = (int(v) for v in row)
        visible = [
            int(r[0])
            for r in conn.execute(
                "SELECT id FROM posts WHERE status = 'published' AND deleted_at IS NULL ORDER BY id DESC LIMIT 50"
            )
        ]
        category = conn.execute("SELECT slug FROM categories ORDER BY id LIMIT 1").fetchone()
        assert category is not None
    page = "/api/v1/feed?limit=20"
    status, headers, _ = fetch(app_port, page)
    etag = headers.get("ETag")
    if status != 200 or not etag:
        raise SystemExit(f"capacity: {page} answered {status} without an ETag")
    # Each miss workload gets ids nobody asked for (the cache is shared by every node), and so does
    # the next run: a cursor in the cluster's dir moves past the ids this run may use.
    share = args.ids_per_workload
    cursor_file = cluster.root / "capacity-next-id"
    first = int(cursor_file.read_text()) if cursor_file.exists() else low
    if first + 4 * share > high:
        print("capacity: every id was used by earlier runs; starting over (entries may still be cached)")
        first = low
    cursor_file.write_text(str(first + 4 * share))
    starts = {k: first + i * share for i, k in enumerate(("post", "page", "replica-post", "replica-page"))}
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    idle = meter.measure_idle(args.idle)
    print(f"capacity: idle CPU % per tier { ({t: round(100 * v, 2) for t, v in idle.items()}) }", file=sys.stderr)
    results: list[Result] = []
    base_node = f"http://{HOST}:{app_port}"
    with tempfile.TemporaryDirectory(prefix="readwire-capacity-") as tmp:
        work = Path(tmp)
        fetch(nginx_port, page)
        results.append(wrk(meter, "edge-hit", f"http://{HOST}:{nginx_port}{page}", args))
        results.append(
            wrk(meter, "edge-proxied", f"http://{HOST}:{nginx_port}{page}", args, "-H", "Authorization: Bearer x")
        )
        results.append(wrk(meter, "hit", base_node + page, args))
        results.append(wrk(meter, "304", base_node + page, args, "-H", f"If-None-Match: {etag}"))
        note = f"ids from {starts['post']}, {share} available"
        script = lua_sequence(work, "post", starts["post"], 1)
        results.append(wrk(meter, "miss-post", base_node, args, "-s", str(script), note=note))
        script = lua_sequence(work, "page", starts["page"], BULK)
        note = f"ids from {starts['page']}, {share} available"
        results.append(wrk(meter, "miss-page", base_node, args, "-s", str(script), note=note))

        # A node reading from the replica: what a read moved off the primary costs the replica.
        port = free_port()
        env = {
            **os.environ,
            **state["settings"],
            **state["env"],
            **state.get("node_env", {}),
            "DATABASE_URL": replica_url,
            "DATABASE_REPLICA_URLS": "",  # this node's primary is the replica itself
            "PYTHONUNBUFFERED": "1",
        }
        node = start_gunicorn(port, env, work / "replica-node.log", f"readwire-capacity-{port}", work / "metrics")
        try:
            groups["app"].append(node)
            replica_node = f"http://{HOST}:{port}"
            for kind, bulk in (("post", 1), ("page", BULK)):
                script = lua_sequence(work, f"replica-{kind}", starts[f"replica-{kind}"], bulk)
                note = f"ids from {starts[f'replica-{kind}']}, {share} available"
                results.append(wrk(meter, f"replica-miss-{kind}", replica_node, args, "-s", str(script), note=note))
        finally:
            groups["app"].remove(node)
            stop_group(node, "gunicorn", signal.SIGTERM, 30)

        per_editor = 50  # RATELIMIT_WRITE is 60 a minute per author
        tokens = make_editors(state, 2 * math.ceil(args.writes / per_editor), nginx_port)
        half = len(tokens) // 2
        slug = str(category[0])

        def post(i: int) -> tuple[str, Any]:
            title = f"Capacity probe {i} {secrets.token_hex(3)}"
            return "/api/v1/posts", {"title": title, "body": "Measured. " * 40, "category": slug, "tags": []}

        def comment(i: int) -> tuple[str, Any]:
            return f"/api/v1/posts/{visible[i % len(visible)]}/comments", {"body": f"Measured comment {i}."}

        results.append(writes(meter, "write-post", nginx_port, tokens[:half], args.writes, post))
        results.append(writes(meter, "write-comment", nginx_port, tokens[half:], args.writes, comment))
        results.extend(redis_benchmark(meter, redis_primary[1], args.redis_requests))

    print(f"\nposts {posts}; load average before: {' '.join(load_before)}; {os.cpu_count()} cores")
    print(f"idle CPU % per tier (subtracted): { {t: round(100 * v, 2) for t, v in idle.items()} }")
    print(f"wrk -t1 -c{args.connections} -d{args.duration}s; writes: {args.writes} per workload, 4 client threads\n")
    header = "| workload | requests | req/s | " + " | ".join(f"{t} µs/req" for t in TIERS)
    print(header + " | client CPU % | machine busy % | others % | non-2xx |")
    print("|---|---:|---:|" + "---:|" * len(TIERS) + "---:|---:|---:|---:|")
    for r in results:
        cells = " | ".join(f"{r.cpu_us_per_request[t]:,.0f}" for t in TIERS)
        print(
            f"| {r.name} | {r.requests:,} | {r.per_second:,.0f} | {cells} | {r.client_cpu_pct:.0f} | "
            f"{r.machine_busy_pct:.0f} | {r.others_busy_pct:.0f} | {r.non_2xx} |"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "posts": posts,
        "load_before": load_before,
        "cores": os.cpu_count(),
        "args": {k: str(v) for k, v in vars(args).items()},
        "idle_cpu_pct": {t: round(100 * v, 3) for t, v in idle.items()},
        "results": [asdict(r) for r in results],
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\n(JSON: {args.out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
