"""What the Redis failover safety costs a write: latency of PATCH /posts/{id}, interleaved A/B.

    python -m bench.write_cost [--dir .cluster] [--rounds 12] [--writes 20] [--base REF]

On a running `make cluster`, three extra app nodes are started side by side on the same
PostgreSQL primary and the same Redis primary (one gevent worker each, no rate limit):

- before: the tree at REF (default: 2cd39b5, main before replicas and Sentinel), exported with `git archive`:
  INCRs in a MULTI pipeline, no commit LSN, REDIS_URL straight at the current primary;
- after: this tree as the cluster runs it: the Redis primary found through Sentinel (replid
  checked on every connection), the commit LSN read in the outbox statement and raised with the
  INCRs in one Lua script; no WAIT (the cache epoch makes a lost INCR harmless);
- after+WAIT: the same with CACHE_WAIT_REPLICAS=1 (the alternative: each write's INCRs
  acknowledged by the Redis replica before the write is).

Each round sends `--writes` sequential PATCHes (a new title each) to each node in turn, the
order rotated every round, so a shared, noisy machine's drift hits every variant alike. Reports
p50/p90/p99 per variant over all rounds, and the median over rounds of each round's p50 ratio
against `before`. Client-side wall clock: say how busy the machine was (printed).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from devstack.capacity import make_editors
from devstack.cluster import DEFAULT_DIR, Cluster, sentinel_primary
from devstack.servers import HOST, free_port
from devstack.stack import stop_group, wait_until

BEFORE_SENTINEL = "2cd39b5"  # main just before the scale-out merge (70ca2ab): no LSNs, no Sentinel
REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()


def export(ref: str, into: Path) -> Path:
    """The tree at `ref` as plain files (no worktree registered)."""
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", ref], cwd=REPO, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def start_node(tree: Path, port: int, env: dict[str, str], log: Path) -> int:
    env = {**env, "GUNICORN_BIND": f"{HOST}:{port}", "PROMETHEUS_MULTIPROC_DIR": str(log.parent / f"metrics-{port}")}
    Path(env["PROMETHEUS_MULTIPROC_DIR"]).mkdir(exist_ok=True)
    argv = [str(VENV_BIN / "gunicorn"), "-c", str(tree / "gunicorn.conf.py"), "app:create_app()"]
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, cwd=tree, env=env, stdout=out, stderr=out, start_new_session=True)
    if not wait_until(lambda: proc.poll() is not None or status(port, "/readyz") == 200, 90):
        raise RuntimeError(f"node on {port} did not get ready: {log.read_text()[-2000:]}")
    if proc.poll() is not None:
        raise RuntimeError(f"node on {port} exited: {log.read_text()[-2000:]}")
    return proc.pid


def status(port: int, path: str) -> int:
    try:
        conn = http.client.HTTPConnection(HOST, port, timeout=5)
        conn.request("GET", path)
        return conn.getresponse().status
    except OSError:
        return 0


class Writer:
    """Sequential PATCHes over one keep-alive connection to one node."""

    def __init__(self, port: int, token: str, post_id: int) -> None:
        self.port, self.token, self.post_id = port, token, post_id
        self.conn = http.client.HTTPConnection(HOST, port, timeout=30)
        self.serial = 0

    def write(self) -> float:
        self.serial += 1
        body = json.dumps({"title": f"Write cost probe {self.port} #{self.serial}"}).encode()
        headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
        started = time.perf_counter()
        self.conn.request("PATCH", f"/api/v1/posts/{self.post_id}", body=body, headers=headers)
        response = self.conn.getresponse()
        response.read()
        took = time.perf_counter() - started
        if response.status != 200:
            raise RuntimeError(f"PATCH on {self.port}: {response.status}")
        return took


def create_post(port: int, token: str) -> int:
    conn = http.client.HTTPConnection(HOST, port, timeout=30)
    conn.request("GET", "/api/v1/categories")
    category = json.loads(conn.getresponse().read())["data"][0]["slug"]
    body = json.dumps({"title": "Write cost probe", "body": "Measured.", "category": category, "tags": []})
    conn.request("POST", "/api/v1/posts", body=body.encode(),
                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})  # fmt: skip
    response = conn.getresponse()
    created = json.loads(response.read())
    if response.status != 201:
        raise RuntimeError(f"create on {port}: {response.status} {created}")
    return int(created["id"])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def cpu_busy() -> tuple[float, float]:
    with open("/proc/stat") as f:
        fields = [float(v) for v in f.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields), idle


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.write_cost", description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="the running cluster's dir")
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--writes", type=int, default=20, help="writes per variant per round")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--base", default=BEFORE_SENTINEL, help="git ref of 'before' (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "write_cost.json")
    args = parser.parse_args(argv)
    state = Cluster(args.dir).read_state()
    if not state or not state.get("complete"):
        print("write_cost: no running cluster (make cluster)", file=sys.stderr)
        return 2
    base_ref = git("rev-parse", args.base)
    master = state["settings"]["REDIS_SENTINEL_MASTER"]
    sentinel_port = int(state["services"]["sentinel-1"]["port"])
    redis_primary = sentinel_primary(sentinel_port, master)
    if redis_primary is None:
        print("write_cost: no Sentinel names a Redis primary", file=sys.stderr)
        return 2
    common = {
        **os.environ,
        **state["settings"],
        **state["env"],
        "WEB_CONCURRENCY": "1",
        "DB_CONNECTION_BUDGET": "20",
        "RATELIMIT_WRITE": "1000000/60",
        "ACCESS_LOG": "off",
        "PYTHONUNBUFFERED": "1",
    }
    variants = {
        "before": {"REDIS_URL": f"redis://{redis_primary[0]}:{redis_primary[1]}/0", "REDIS_SENTINELS": ""},
        "after": {},
        "after+WAIT": {"CACHE_WAIT_REPLICAS": "1", "CACHE_WAIT_TIMEOUT": "0.03"},
    }
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    latencies: dict[str, list[float]] = {name: [] for name in variants}
    round_p50: dict[str, list[float]] = {name: [] for name in variants}
    with ExitStack() as stack:
        work = Path(tempfile.mkdtemp(prefix="readwire-write-cost-"))
        stack.callback(shutil.rmtree, work, True)
        base_tree = export(base_ref, work / "before")
        ports: dict[str, int] = {}
        for name, extra in variants.items():
            port = free_port()
            tree = base_tree if name == "before" else REPO
            pid = start_node(tree, port, {**common, **extra}, work / f"{name}.log")
            stack.callback(stop_group, pid, "gunicorn", signal.SIGTERM, 30)
            ports[name] = port
        token = make_editors(state, 1, ports["after"])[0]
        writers = {name: Writer(port, token, create_post(port, token)) for name, port in ports.items()}
        for writer in writers.values():
            for _ in range(args.warmup):
                writer.write()
        total0, idle0 = cpu_busy()
        names = list(variants)
        for r in range(args.rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                took = [writers[name].write() for _ in range(args.writes)]
                latencies[name] += took
                round_p50[name].append(statistics.median(took))
        total1, idle1 = cpu_busy()
    busy = 100 * (1 - (idle1 - idle0) / max(1.0, total1 - total0))
    load_after = Path("/proc/loadavg").read_text().split()[:3]
    report: dict[str, Any] = {
        "base": base_ref,
        "head": git("rev-parse", "--short", "HEAD"),
        "rounds": args.rounds,
        "writes_per_round": args.writes,
        "load_before": load_before,
        "load_after": load_after,
        "machine_busy_pct": round(busy, 1),
        "variants": {},
    }
    print(f"\nwrites: PATCH /posts/{{id}} (6 namespaces bumped), {args.rounds} rounds x {args.writes} per variant,")
    print(f"base {base_ref[:10]}; load average {' '.join(load_before)} -> {' '.join(load_after)}; "
          f"machine busy {busy:.0f} % of {os.cpu_count()} cores during the rounds\n")  # fmt: skip
    print("| variant | writes | p50 ms | p90 ms | p99 ms | mean ms | median of per-round p50 ratios vs before |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, values in latencies.items():
        ratios = [a / b for a, b in zip(round_p50[name], round_p50["before"], strict=True)]
        row = {
            "writes": len(values),
            "p50_ms": round(1000 * percentile(values, 0.5), 2),
            "p90_ms": round(1000 * percentile(values, 0.9), 2),
            "p99_ms": round(1000 * percentile(values, 0.99), 2),
            "mean_ms": round(1000 * statistics.fmean(values), 2),
            "p50_ratio_median": round(statistics.median(ratios), 3),
        }
        report["variants"][name] = row
        print(f"| {name} | {row['writes']} | {row['p50_ms']} | {row['p90_ms']} | {row['p99_ms']} | "
              f"{row['mean_ms']} | {row['p50_ratio_median']} |")  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\n(JSON: {args.out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
