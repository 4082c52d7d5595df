"""Side by side, in one run: Readwire against a tuned FastAPI peer and a bare-bytes Flask view.

    make compare                      # python -m bench.compare.run [--rounds 3 --duration 8 ...]

Servers (throwaway, devstack): one PostgreSQL and one Redis, with the data kept in .compare/
between runs (seeded once, STACK_POSTS posts, `flask seed` as the stack does); the peer's data
is a copy of Readwire's database in the same server (CREATE DATABASE ... TEMPLATE: the same
rows, the same indexes). Three HTTP servers, all up for the whole run:

- Readwire: gunicorn with the real gunicorn.conf.py (gevent), stack.env's settings, one worker;
- the FastAPI peer (bench/compare/peer.py): uvicorn + uvloop + httptools, one worker, asyncpg,
  orjson, Redis bytes cache;
- the bare view (devstack/bare_app.py): a Flask view returning Readwire's captured hit page
  under the same gunicorn.conf.py, so `Readwire / bare` is what the app adds to gunicorn+Flask;
- the Flask floor (bench/compare/floor.py), misses only: the peer's exact work (Redis GET, two
  prepared queries on a kept connection, orjson, Redis SET) in Flask under the same
  gunicorn.conf.py with psycopg 3 and redis-py, on the peer's data and URLs: `floor / FastAPI`
  is the most a Flask + gunicorn gevent app doing the peer's work gets, the ceiling of
  `Readwire / FastAPI` on this stack.

Every server, PostgreSQL and Redis are pinned to core 0, wrk (one thread, -c CONNECTIONS) to
core 1. Each round measures every target once (the order alternates between rounds, so a noisy
neighbour hits both sides of a ratio alike); a ratio is computed per round and the table gives
its median. Targets:

- hit: the same URL again and again (Readwire near/Redis hit, the peer's Redis GET, the bare view);
- 304: Readwire with the page's ETag in If-None-Match, against the bare view's 200;
- miss, first pages: every request a distinct URL (feed scopes x limits, no cursor);
- miss, deep pages: every request a distinct URL, cursors at least DEEP items into the global
  feed and the biggest categories (each server walks its own `next` cursors);
  no URL is used twice in the whole run (bench/compare/urls.lua), and Readwire's answers are
  checked to be misses (X-App-Cache);
- edge: the project's Nginx (nginx.conf, stack.env's settings) in front of Readwire, its
  microcache HIT on the hit URL against the same Nginx serving the same bytes as a static file
  (/_static/, open_file_cache and logging as configured): what the cache path costs at the edge.

CPU per request comes from /proc: the app server's process group, PostgreSQL (postmaster,
backends, reaped children) and Redis. Output: a Markdown table on stdout and in OUT.md, every
run in OUT.json. Ports (fixed, overridable): POSTGRES_PORT 55432, REDIS_PORT 56379, APP_PORT
58000, PEER_PORT 58100, BARE_PORT 58101, NGINX_PORT 58200, FLOOR_PORT (PEER_PORT + 10). Wall-clock
figures on a shared machine are noisy: the load average and the other processes' share of the cores
are reported with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from bench.compare.urls import walk
from devstack.servers import HOST, PG_TEST_SETTINGS, Postgres, Redis
from devstack.stack import (
    children,
    end_session,
    migrate_and_seed,
    nginx_values,
    stack_settings,
    start_nginx,
    stop_group,
    wait_until,
)

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
LUA = Path(__file__).with_name("urls.lua")
SERVER_CPU, CLIENT_CPU = "0", "1"
TICK = os.sysconf("SC_CLK_TCK")
API = "/api/v1"
HIT_PATH = f"{API}/feed?limit=20"
STATIC_PATH = "/_static/hit.json"
SECRET = "compare-secret-not-for-production-0123456789"


# --- /proc ----------------------------------------------------------------------------------------
def _stat(pid: int) -> list[str]:
    raw = Path(f"/proc/{pid}/stat").read_text()
    return raw[raw.rindex(")") + 2 :].split()


def cpu_seconds(pid: int, with_children: bool = False) -> float:
    """utime + stime of a process (+ its reaped children's) in seconds; 0 if it is gone."""
    try:
        fields = _stat(pid)
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    if with_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / TICK


def tree_cpu(pid: int) -> float:
    """A server and everything under it: the leader and every live descendant (gunicorn's
    worker, PostgreSQL's backends), each with its reaped children. One pass over /proc."""
    kids: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with suppress(OSError, IndexError, ValueError):
                kids.setdefault(int(_stat(int(entry.name))[1]), []).append(int(entry.name))
    total, stack = 0.0, [pid]
    while stack:
        proc = stack.pop()
        total += cpu_seconds(proc, with_children=True)
        stack.extend(kids.get(proc, ()))
    return total


def pin_tree(pid: int, cpus: set[int]) -> None:
    """Pin every thread of a process and of its live descendants (new ones inherit it)."""
    for proc in [pid, *children(pid)]:
        for task in Path(f"/proc/{proc}/task").glob("*"):
            with suppress(OSError):
                os.sched_setaffinity(int(task.name), cpus)


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies over all CPUs."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# --- servers --------------------------------------------------------------------------------------
@dataclass
class Server:
    name: str
    port: int
    pid: int


def _http_ok(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@contextmanager
def pinned_server(
    name: str, argv: list[str], env: dict[str, str], port: int, logs: Path, cwd: Path = REPO
) -> Iterator[Server]:
    """A server process on the server core in a session of its own, stopped at the end."""
    log = logs / f"{name}.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            ["taskset", "-c", SERVER_CPU, *argv],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        up = wait_until(lambda: proc.poll() is not None or _http_ok(f"http://{HOST}:{port}/healthz"), 90)
        if not up or proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{name} did not come up on {port}:\n{tail}")
        yield Server(name, port, proc.pid)
    finally:
        end_session(proc)


def ensure_data(pg: Postgres, posts: str, logs: Path) -> tuple[str, str]:
    """Readwire's database (migrated, seeded once) and the peer's copy of it; their URLs."""
    if not pg.psql("SELECT 1 FROM pg_database WHERE datname = 'readwire'").strip():
        pg.create_database("readwire")
    readwire = pg.url_for("readwire")
    env = {**os.environ, "DATABASE_URL": readwire, "SECRET_KEY": SECRET, "REDIS_URL": ""}
    env.pop("REDIS_URL")
    say(f"migrating and seeding {posts} posts if empty (once per .compare/ dir)")
    took = migrate_and_seed(env, posts)
    say(f"data ready ({took:.0f} s)")
    if not pg.psql("SELECT 1 FROM pg_database WHERE datname = 'peer'").strip():
        pg.psql("CREATE DATABASE peer TEMPLATE readwire")
    with psycopg.connect(readwire, autocommit=True) as conn:
        conn.execute("ANALYZE")
    with psycopg.connect(pg.url_for("peer"), autocommit=True) as conn:
        conn.execute("ANALYZE")
    return readwire, pg.url_for("peer")


# --- URLs -----------------------------------------------------------------------------------------
def scope_paths(database_url: str, min_posts: int) -> list[str]:
    """Feed paths of every scope with at least `min_posts` visible posts (first pages are then
    full pages), biggest first: the global feed, categories, tags, authors."""
    with psycopg.connect(database_url) as conn:
        categories = conn.execute(
            "SELECT slug FROM categories WHERE post_count >= %s ORDER BY post_count DESC", (min_posts,)
        ).fetchall()
        tags = conn.execute("SELECT slug FROM tags WHERE post_count >= %s ORDER BY post_count DESC", (min_posts,))
        tag_rows = tags.fetchall()
        authors = conn.execute(
            "SELECT username FROM authors WHERE post_count >= %s ORDER BY post_count DESC", (min_posts,)
        ).fetchall()
    return (
        [f"{API}/feed"]
        + [f"{API}/categories/{s}/feed" for (s,) in categories]
        + [f"{API}/tags/{s}/feed" for (s,) in tag_rows]
        + [f"{API}/authors/{u}/feed" for (u,) in authors]
    )


def with_query(path: str, limit: int, cursor: str | None) -> str:
    return f"{path}?{urllib.parse.urlencode({'limit': limit, **({'cursor': cursor} if cursor else {})})}"


def first_page_urls(paths: Sequence[str], limits: Sequence[int], seed: int) -> list[str]:
    urls = sorted({with_query(p, n, None) for p in paths for n in limits})
    random.Random(seed).shuffle(urls)
    return urls


WALK_LIMIT = 50  # page size of the walks that collect cursors (not among the measured limits)


def deep_urls(base: str, paths: Sequence[str], limits: Sequence[int], deep: int, pages: int, seed: int) -> list[str]:
    """Every (cursor at least `deep` items in, limit) of `paths` on the server at `base`,
    walking its own `next` cursors WALK_LIMIT items at a time, up to `pages` pages per feed."""
    urls: set[str] = set()
    with ThreadPoolExecutor(max_workers=4) as pool:
        walks = list(pool.map(lambda path: (path, walk(base, path, WALK_LIMIT, pages)), paths))
    for path, starts in walks:
        for cursor in starts[deep // WALK_LIMIT :]:
            urls.update(with_query(path, n, cursor) for n in limits if cursor)
    ordered = sorted(urls)
    random.Random(seed).shuffle(ordered)
    return ordered


class UrlFeed:
    """One list of distinct URLs in a file, handed out in slices that never overlap."""

    def __init__(self, path: Path, urls: Sequence[str]) -> None:
        self.path, self.total, self.next = path, len(urls), 1
        path.write_text("".join(f"{url}\n" for url in urls))
        self.script = path.with_suffix(".lua")
        self.script.write_text(LUA.read_text().replace("{{URLS_FILE}}", str(path.resolve())))

    def take(self) -> int:
        return self.next

    def used(self, requests: int, connections: int) -> None:
        # Requests still in flight when wrk stopped were sent too: skip past them.
        self.next += requests + 2 * connections


# --- wrk ------------------------------------------------------------------------------------------
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not match:
        return float("nan")
    value, unit = match.groups()
    return float(value) * (60e3 if unit == "m" else _UNITS[unit])


def parse_wrk(output: str) -> dict[str, Any]:
    latency = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", output, re.M))
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    count = re.search(r"(\d+) requests in", output)
    return {
        "requests_per_s": float(rate.group(1)) if rate else 0.0,
        "requests": int(count.group(1)) if count else 0,
        "p50_ms": _ms(latency.get("50", "")),
        "p99_ms": _ms(latency.get("99", "")),
        "non_2xx_3xx": int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", output)) else 0,
        "socket_errors": m.group(1).strip() if (m := re.search(r"Socket errors: (.*)", output)) else "",
        "answers": {a: int(n) for a, n in re.findall(r"^answers (\S+ \S+) (\d+)$", output, re.M)},
        "exhausted": "EXHAUSTED" in output,
    }


@dataclass
class Run:
    round: int
    target: str
    server: str
    requests_per_s: float
    requests: int
    p50_ms: float
    p99_ms: float
    non_2xx_3xx: int
    socket_errors: str
    answers: dict[str, int]
    exhausted: bool
    cpu_ms: dict[str, float] = field(default_factory=dict)  # per request: app, postgres, redis
    others_cores: float = 0.0  # cores' worth used by everything else on the machine (wrk included)


def wrk(
    url: str, seconds: float, connections: int, extra: Sequence[str] = (), script_args: Sequence[str] = ()
) -> tuple[str, int]:
    argv = ["taskset", "-c", CLIENT_CPU, "wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", *extra]
    tail = ["--", *script_args] if script_args else []
    res = subprocess.run([*argv, url, *tail], capture_output=True, text=True, timeout=seconds + 60)
    return res.stdout + res.stderr, res.returncode


# --- the measurement ------------------------------------------------------------------------------
@dataclass
class Target:
    name: str  # hit, 304, miss-first, miss-deep
    server: Server
    path: str = HIT_PATH
    headers: dict[str, str] = field(default_factory=dict)
    urls: UrlFeed | None = None


def measure(target: Target, round_: int, args: argparse.Namespace, pids: dict[str, int]) -> Run:
    base = f"http://{HOST}:{target.server.port}"
    header_args = [arg for k, v in target.headers.items() for arg in ("-H", f"{k}: {v}")]
    feed = target.urls
    if feed is None:
        wrk(base + target.path, args.warmup, args.connections, header_args)
    else:
        out, _ = wrk(base, args.miss_warmup, args.connections, ["-s", str(feed.script)], ["1", str(feed.take())])
        feed.used(parse_wrk(out)["requests"], args.connections)

    def sample() -> tuple[float, float, float, tuple[int, int]]:
        return tree_cpu(target.server.pid), tree_cpu(pids["postgres"]), cpu_seconds(pids["redis"]), machine_jiffies()

    app0, pg0, redis0, machine0 = sample()
    if feed is None:
        out, code = wrk(base + target.path, args.duration, args.connections, header_args)
    else:
        out, code = wrk(base, args.duration, args.connections, ["-s", str(feed.script)], ["1", str(feed.take())])
    app1, pg1, redis1, machine1 = sample()
    if code:
        raise RuntimeError(f"wrk failed on {target.name} {target.server.name}:\n{out}")
    parsed = parse_wrk(out)
    if feed is not None:
        feed.used(parsed["requests"], args.connections)
    n = parsed["requests"] or float("nan")
    ours = (app1 - app0) + (pg1 - pg0) + (redis1 - redis0)
    window = (machine1[1] - machine0[1]) / TICK / (os.cpu_count() or 1)
    busy = (machine1[0] - machine0[0]) / max(1, machine1[1] - machine0[1])
    return Run(
        round=round_,
        target=target.name,
        server=target.server.name,
        cpu_ms={
            "app": 1000 * (app1 - app0) / n,
            "postgres": 1000 * (pg1 - pg0) / n,
            "redis": 1000 * (redis1 - redis0) / n,
        },
        others_cores=max(0.0, busy * (os.cpu_count() or 1) - ours / max(window, 1e-9)),
        **parsed,
    )


# Ratios of the table: (label, numerator (target, server), denominator (target, server), goal).
RATIOS = [
    ("miss, first pages: Readwire / FastAPI", ("miss-first", "readwire"), ("miss-first", "fastapi"), 1.0),
    ("miss, deep pages: Readwire / FastAPI", ("miss-deep", "readwire"), ("miss-deep", "fastapi"), 1.0),
    ("hit: Readwire / FastAPI", ("hit", "readwire"), ("hit", "fastapi"), 1.0),
    ("hit: Readwire / bare view", ("hit", "readwire"), ("hit", "bare"), 0.8),
    ("304: Readwire / bare view (200)", ("304", "readwire"), ("hit", "bare"), 1.0),
    ("edge: Nginx microcache HIT / Nginx static file", ("edge-hit", "nginx"), ("edge-static", "nginx"), 0.85),
    ("deep / first page, Readwire (throughput)", ("miss-deep", "readwire"), ("miss-first", "readwire"), 1 / 1.2),
    ("deep / first page, FastAPI (throughput)", ("miss-deep", "fastapi"), ("miss-first", "fastapi"), 1 / 1.2),
    # The ceiling of Readwire / FastAPI on Flask + gunicorn gevent: the peer's own work on that stack.
    ("miss, first pages: Flask floor / FastAPI", ("miss-first", "floor"), ("miss-first", "fastapi"), 0.0),
    ("miss, deep pages: Flask floor / FastAPI", ("miss-deep", "floor"), ("miss-deep", "fastapi"), 0.0),
    ("miss, first pages: Readwire / Flask floor", ("miss-first", "readwire"), ("miss-first", "floor"), 0.0),
    ("miss, deep pages: Readwire / Flask floor", ("miss-deep", "readwire"), ("miss-deep", "floor"), 0.0),
]


def tree_ratios(name: str) -> list[tuple[str, tuple[str, str], tuple[str, str], float]]:
    """The ratios of another Readwire tree (--tree): against the peer, and against this tree."""
    return [
        (f"miss, first pages: {name} / FastAPI", ("miss-first", name), ("miss-first", "fastapi"), 1.0),
        (f"miss, deep pages: {name} / FastAPI", ("miss-deep", name), ("miss-deep", "fastapi"), 1.0),
        (f"miss, first pages: Readwire / {name}", ("miss-first", "readwire"), ("miss-first", name), 0.0),
        (f"miss, deep pages: Readwire / {name}", ("miss-deep", "readwire"), ("miss-deep", name), 0.0),
        (f"hit: Readwire / {name}", ("hit", "readwire"), ("hit", name), 0.0),
        (f"304: Readwire / {name}", ("304", "readwire"), ("304", name), 0.0),
    ]


def summarize(runs: list[Run], args: argparse.Namespace, meta: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    def cell(target: str, server: str) -> list[Run]:
        return [r for r in runs if r.target == target and r.server == server]

    lines = [
        f"Side by side ({meta['posts']} posts; servers, PostgreSQL and Redis on CPU {SERVER_CPU}, "
        f"wrk -t1 -c{args.connections} -d{args.duration:g}s on CPU {CLIENT_CPU}; {args.rounds} interleaved rounds; "
        f"load average before {meta['load_before']}, after {meta['load_after']})",
        "",
        "| target | server | req/s (rounds) | median req/s | p50 ms | p99 ms | CPU ms/req app + PG + Redis "
        "| others' cores | answers |",
        "|---|---|---|---:|---:|---:|---|---:|---|",
    ]
    cells: dict[str, dict[str, Any]] = {}
    for target in ("miss-first", "miss-deep", "hit", "304", "edge-hit", "edge-static"):
        for server in ("readwire", *meta["trees"], "fastapi", "floor", "bare", "nginx"):
            mine = cell(target, server)
            if not mine:
                continue
            med = {k: statistics.median(r.cpu_ms[k] for r in mine) for k in ("app", "postgres", "redis")}
            rates = [r.requests_per_s for r in mine]
            answers: dict[str, int] = {}
            for r in mine:
                for key, count in r.answers.items():
                    answers[key] = answers.get(key, 0) + count
            flags = " EXHAUSTED" if any(r.exhausted for r in mine) else ""
            cells[f"{target}/{server}"] = {"median_rps": statistics.median(rates), "cpu_ms": med}
            lines.append(
                f"| {target} | {server} | {', '.join(f'{x:,.0f}' for x in rates)} | {statistics.median(rates):,.0f} "
                f"| {statistics.median(r.p50_ms for r in mine):.1f} | {statistics.median(r.p99_ms for r in mine):.1f} "
                f"| {med['app']:.2f} + {med['postgres']:.2f} + {med['redis']:.2f} = {sum(med.values()):.2f} "
                f"| {statistics.median(r.others_cores for r in mine):.2f} "
                f"| {', '.join(f'{k}: {v}' for k, v in sorted(answers.items())) or '-'}{flags} |"
            )
    lines += ["", "| ratio (median of per-round ratios) | rounds | median | goal | |", "|---|---|---:|---:|---|"]
    ratios: dict[str, Any] = {}
    for label, (t1, s1), (t2, s2), goal in RATIOS + [r for name in meta["trees"] for r in tree_ratios(name)]:
        per_round = []
        for round_ in range(args.rounds):
            a = [r for r in cell(t1, s1) if r.round == round_]
            b = [r for r in cell(t2, s2) if r.round == round_]
            if a and b and a[0].requests_per_s and b[0].requests_per_s:
                per_round.append(a[0].requests_per_s / b[0].requests_per_s)
        if not per_round:
            continue
        median = statistics.median(per_round)
        ratios[label] = {"rounds": per_round, "median": median, "goal": goal}
        verdict = ("met" if median >= goal else "not met") if goal else ""
        each = ", ".join(f"{x:.2f}" for x in per_round)
        lines.append(f"| {label} | {each} | **{median:.2f}** | {f'>= {goal:.2f}' if goal else ''} | {verdict} |")
    report = {**meta, "cells": cells, "ratios": ratios, "runs": [asdict(r) for r in runs]}
    return "\n".join(lines) + "\n", report


# --- main -----------------------------------------------------------------------------------------
def say(message: str) -> None:
    print(f"compare: {message}", file=sys.stderr, flush=True)


def fetch(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    import http.client

    conn = http.client.HTTPConnection(HOST, port, timeout=30)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.compare.run", description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=REPO / ".compare", help="servers' data (kept) and logs")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "compare", help="OUT.md, OUT.json")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=8.0, help="seconds measured per target and round")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of load before each measurement")
    parser.add_argument("--miss-warmup", type=float, default=1.0, help="the same for misses (it uses up URLs)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--limits", default="10-30", help="page sizes of miss URLs (FIRST-LAST), mean 20")
    parser.add_argument("--deep", type=int, default=5_000, help="items into a feed where deep pages start")
    parser.add_argument("--deep-feeds", type=int, default=4, help="the global feed and this many categories - 1")
    parser.add_argument("--walk-pages", type=int, default=600, help=f"pages of {WALK_LIMIT} walked per deep feed")
    parser.add_argument(
        "--only", default="", help="comma-separated targets (hit,304,edge-hit,edge-static,miss-first,miss-deep)"
    )
    parser.add_argument(
        "--tree",
        action="append",
        default=[],
        help="NAME=PATH: also measure the Readwire in PATH (e.g. `git archive BASE | tar -x -C PATH`) "
        "with this venv, its own Redis database and port (BARE_PORT + 1, ...)",
    )
    args = parser.parse_args(argv)
    for tool in ("wrk", "taskset"):
        if not shutil.which(tool):
            print(f"compare: needs {tool} (bash scripts/ensure-servers.sh --bench)", file=sys.stderr)
            return 2
    settings = stack_settings()
    env_port = lambda name, default: int(os.environ.get(name) or default)  # noqa: E731
    ports = {
        "postgres": env_port("POSTGRES_PORT", 55432),
        "redis": env_port("REDIS_PORT", 56379),
        "readwire": env_port("APP_PORT", 58000),
        "fastapi": env_port("PEER_PORT", 58100),
        "floor": env_port("FLOOR_PORT", env_port("PEER_PORT", 58100) + 10),
        "bare": env_port("BARE_PORT", 58101),
        "nginx": env_port("NGINX_PORT", 58200),
    }
    logs = args.dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    args.dir.chmod(0o755)
    low, _, high = args.limits.partition("-")
    limits = list(range(int(low), int(high or low) + 1))
    posts = os.environ.get("STACK_POSTS") or settings.get("STACK_POSTS", "100000")
    with ExitStack() as stack:
        pg_settings = {**PG_TEST_SETTINGS, "max_connections": settings.get("POSTGRES_MAX_CONNECTIONS", "200")}
        pg = Postgres.start(args.dir / "postgres", port=ports["postgres"], settings=pg_settings)
        stack.callback(pg.stop)
        redis_config = {"maxmemory": "512mb", "maxmemory-policy": "volatile-lru"}
        redis = Redis.start(args.dir / "redis", port=ports["redis"], config=redis_config)
        stack.callback(redis.stop)
        readwire_db, peer_db = ensure_data(pg, posts, logs)
        pids = {"postgres": int(pg.pid() or 0), "redis": redis.proc.pid}
        pin_tree(pids["postgres"], {int(SERVER_CPU)})
        pin_tree(pids["redis"], {int(SERVER_CPU)})
        base_env = {**os.environ, **settings, "PYTHONUNBUFFERED": "1", "WEB_CONCURRENCY": "1"}
        rw_env = {
            **base_env,
            "DATABASE_URL": readwire_db,
            "REDIS_URL": f"redis://{HOST}:{ports['redis']}/0",
            "SECRET_KEY": SECRET,
            "GUNICORN_BIND": f"{HOST}:{ports['readwire']}",
            "GUNICORN_PROC_NAME": "readwire-compare",
            "PROMETHEUS_MULTIPROC_DIR": str(args.dir / "prometheus"),
        }
        (args.dir / "prometheus").mkdir(exist_ok=True)
        gunicorn = [str(VENV_BIN / "gunicorn"), "-c", str(REPO / "gunicorn.conf.py")]
        readwire = stack.enter_context(
            pinned_server("readwire", [*gunicorn, "app:create_app()"], rw_env, ports["readwire"], logs)
        )
        peer_env = {
            **base_env,
            "PEER_DATABASE_URL": peer_db,
            "PEER_REDIS_URL": f"redis://{HOST}:{ports['redis']}/1",
            "PEER_POOL_SIZE": str(args.connections),
            # Post urls of the same length as Readwire's (the API's own URL under its root).
            "PUBLIC_BASE_URL": f"http://{HOST}:{ports['readwire']}",
        }
        uvicorn = [str(VENV_BIN / "uvicorn"), "bench.compare.peer:app", "--host", HOST, "--port", str(ports["fastapi"])]
        uvicorn += ["--loop", "uvloop", "--http", "httptools", "--workers", "1", "--no-access-log"]
        uvicorn += ["--log-level", "warning"]
        peer = stack.enter_context(pinned_server("fastapi", uvicorn, peer_env, ports["fastapi"], logs))
        floor_env = {
            **peer_env,
            "PEER_REDIS_URL": f"redis://{HOST}:{ports['redis']}/15",  # its own cache: the peer's URLs miss
            "GUNICORN_BIND": f"{HOST}:{ports['floor']}",
            "GUNICORN_PROC_NAME": "readwire-compare-floor",
        }
        floor_argv = [*gunicorn, "bench.compare.floor:app"]
        floor = stack.enter_context(pinned_server("floor", floor_argv, floor_env, ports["floor"], logs))

        # The hit page, captured from Readwire: the bare view serves these bytes and headers.
        status, headers, body = fetch(readwire.port, HIT_PATH)
        status, headers, body = fetch(readwire.port, HIT_PATH)
        if status != 200:
            raise SystemExit(f"{HIT_PATH} answered {status} on Readwire")
        peer_body = fetch(peer.port, HIT_PATH)[2]
        if json.loads(peer_body)["data"] != json.loads(body)["data"]:
            raise SystemExit("the FastAPI peer's page differs from Readwire's: not the same data")
        if json.loads(fetch(floor.port, HIT_PATH)[2])["data"] != json.loads(body)["data"]:
            raise SystemExit("the Flask floor's page differs from Readwire's: not the same data")
        captured = args.dir / "hit-response.json"
        captured.write_text(
            json.dumps({"status": status, "headers": list(headers.items()), "body": body.decode("latin-1")})
        )
        bare_env = {**base_env, "GUNICORN_BIND": f"{HOST}:{ports['bare']}", "BARE_RESPONSE": str(captured)}
        bare_argv = [*gunicorn, "devstack.bare_app:app"]
        bare = stack.enter_context(pinned_server("bare", bare_argv, bare_env, ports["bare"], logs))
        etag = headers["ETag"]
        if fetch(readwire.port, HIT_PATH, {"If-None-Match": etag})[0] != 304:
            raise SystemExit("Readwire did not answer 304 to its own ETag")
        # The edge: the project's Nginx in front of Readwire; the hit page's bytes as a static file.
        edge_dir = args.dir / "nginx"
        static_dir, state_dir = edge_dir / "static", edge_dir / "state"
        for d in (edge_dir, static_dir, state_dir):
            d.mkdir(parents=True, exist_ok=True)
            d.chmod(0o755)  # Nginx's workers run as nobody when started by root
        (static_dir / "hit.json").write_bytes(body)
        edge_settings = {**settings, "NGINX_PORT": str(ports["nginx"]), "APP_PORT": str(ports["readwire"])}
        edge_settings["NGINX_ACCESS_LOG"] = f"{logs / 'nginx-access.log'} readwire buffer=64k flush=1s"
        edge_pid = start_nginx(nginx_values(edge_settings, state_dir, static_dir, logs), edge_dir, logs, ports["nginx"])
        stack.callback(stop_group, edge_pid, "nginx", signal.SIGQUIT, 10)
        pin_tree(edge_pid, {int(SERVER_CPU)})
        edge = Server("nginx", ports["nginx"], edge_pid)
        if fetch(edge.port, STATIC_PATH)[2] != body or fetch(edge.port, HIT_PATH)[0] != 200:
            raise SystemExit("Nginx does not serve the hit page and its static copy")
        trees: list[Server] = []
        for number, spec in enumerate(args.tree, 1):
            name, _, path = spec.partition("=")
            tree, port = Path(path).resolve(), ports["bare"] + number
            tree_env = {
                **rw_env,
                "REDIS_URL": f"redis://{HOST}:{ports['redis']}/{1 + number}",  # its own cache
                "GUNICORN_BIND": f"{HOST}:{port}",
                "GUNICORN_PROC_NAME": f"readwire-compare-{name}",
            }
            tree_argv = [str(VENV_BIN / "gunicorn"), "-c", str(tree / "gunicorn.conf.py"), "app:create_app()"]
            trees.append(stack.enter_context(pinned_server(name, tree_argv, tree_env, port, logs, cwd=tree)))
            if fetch(port, HIT_PATH)[0] != 200:
                raise SystemExit(f"{name}: {HIT_PATH} did not answer 200")

        say("collecting URLs (each server walks its own cursors)")
        t0 = time.monotonic()
        paths = scope_paths(readwire_db, min_posts=max(limits) + 1)
        with psycopg.connect(readwire_db) as conn:
            big = conn.execute("SELECT slug FROM categories ORDER BY post_count DESC LIMIT %s", (args.deep_feeds - 1,))
            deep_paths = [f"{API}/feed"] + [f"{API}/categories/{s}/feed" for (s,) in big.fetchall()]
        feeds_dir = args.dir / "urls"
        feeds_dir.mkdir(exist_ok=True)
        first = first_page_urls(paths, limits, seed=1)
        urls = {
            ("miss-first", "readwire"): UrlFeed(feeds_dir / "first-readwire.txt", first),
            ("miss-first", "fastapi"): UrlFeed(feeds_dir / "first-fastapi.txt", first),
            ("miss-first", "floor"): UrlFeed(feeds_dir / "first-floor.txt", first),
        }
        # The floor answers what the peer does (scopes' pages; WALK_LIMIT: not a measured URL).
        checked = [p for p in paths if "/tags/" in p][:3] + [p for p in paths if "/categories/" in p][:3]
        for path in (with_query(p, WALK_LIMIT, None) for p in checked):
            if json.loads(fetch(floor.port, path)[2])["data"] != json.loads(fetch(peer.port, path)[2])["data"]:
                raise SystemExit(f"the Flask floor's {path} differs from the peer's")
        for server in (readwire, peer):
            found = deep_urls(f"http://{HOST}:{server.port}", deep_paths, limits, args.deep, args.walk_pages, seed=2)
            urls[("miss-deep", server.name)] = UrlFeed(feeds_dir / f"deep-{server.name}.txt", found)
        # The floor speaks the peer's cursors: the peer's deep URLs, its own slices.
        deep_peer = (feeds_dir / "deep-fastapi.txt").read_text().split()
        urls[("miss-deep", "floor")] = UrlFeed(feeds_dir / "deep-floor.txt", deep_peer)
        for server in trees:  # same secret and cursor format: Readwire's cursors, its own slices
            urls[("miss-first", server.name)] = UrlFeed(feeds_dir / f"first-{server.name}.txt", first)
            deep_list = (feeds_dir / "deep-readwire.txt").read_text().split()
            urls[("miss-deep", server.name)] = UrlFeed(feeds_dir / f"deep-{server.name}.txt", deep_list)
        say(
            f"{len(first)} first-page URLs ({len(paths)} scopes x {len(limits)} limits), deep: "
            + ", ".join(f"{s} {f.total}" for (t, s), f in urls.items() if t == "miss-deep")
            + f" ({time.monotonic() - t0:.0f} s)"
        )

        targets = [
            Target("hit", readwire),
            Target("hit", peer),
            Target("hit", bare),
            Target("304", readwire, headers={"If-None-Match": etag}),
            Target("miss-first", readwire, urls=urls[("miss-first", "readwire")]),
            Target("miss-first", peer, urls=urls[("miss-first", "fastapi")]),
            Target("miss-deep", readwire, urls=urls[("miss-deep", "readwire")]),
            Target("miss-deep", peer, urls=urls[("miss-deep", "fastapi")]),
            Target("miss-first", floor, urls=urls[("miss-first", "floor")]),
            Target("miss-deep", floor, urls=urls[("miss-deep", "floor")]),
            Target("edge-hit", edge),
            Target("edge-static", edge, path=STATIC_PATH),
        ]
        for server in trees:
            targets += [
                Target("hit", server),
                Target("304", server, headers={"If-None-Match": fetch(server.port, HIT_PATH)[1]["ETag"]}),
                Target("miss-first", server, urls=urls[("miss-first", server.name)]),
                Target("miss-deep", server, urls=urls[("miss-deep", server.name)]),
            ]
        kinds = ["hit", "304", "edge-hit", "edge-static", "miss-first", "miss-deep"]
        targets.sort(key=lambda t: kinds.index(t.name))  # the runs of one kind side by side
        if args.only:
            wanted = set(args.only.split(","))
            targets = [t for t in targets if t.name in wanted]
        meta = {"posts": posts, "load_before": load_average(), "path": HIT_PATH, "bytes": len(body)}
        meta["trees"] = [server.name for server in trees]
        runs: list[Run] = []
        for round_ in range(args.rounds):
            order = targets if round_ % 2 == 0 else targets[::-1]
            for target in order:
                run = measure(target, round_, args, pids)
                runs.append(run)
                say(
                    f"round {round_ + 1} {target.name:<10} {target.server.name:<8} {run.requests_per_s:>9,.0f} req/s "
                    f"p99 {run.p99_ms:.1f} ms  {run.answers or ''}"
                )
        meta["load_after"] = load_average()
    table, report = summarize(runs, args, meta)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(table)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
