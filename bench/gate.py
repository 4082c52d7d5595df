"""Deterministic performance gate: instructions per iteration of each hot path, counted by
valgrind's callgrind (as CodSpeed's CPU simulation does, with no service), against a baseline.

    python -m bench.gate check              # exit 1 when a workload got slower than its tolerance
    python -m bench.gate accept --reason "why the new numbers are right"
    python -m bench.gate check --only feed_hit,cursor_decode
    python -m bench.gate check --against origin/main   # baseline measured now, in this environment

Each workload (bench/workloads.py) runs in its own process under callgrind with collection
off; only the measured loop is counted, by toggling collection on entry to a C function that
nothing else calls (`sys.call_tracing`, whose C name is `sys_call_tracing`). Wall-clock effects
(TTLs, trust windows) are configured away, hashing is seeded, and Redis is flushed before each
workload, so a count moves only when the code does: noise is far below 0.1%, and a 5% budget
catches a 5% slowdown without crying wolf on a busy machine. PostgreSQL and Redis are started
here (throwaway) unless BENCH_DATABASE_URL and BENCH_REDIS_URL name running ones.

Counts depend on the interpreter and libraries, so the committed baseline holds for this
machine's toolchain (the one .ci/run uses); elsewhere (GitHub runners) use --against to
measure the base commit in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from queue import Queue
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BASELINE = REPO / "bench" / "baseline.json"
DEFAULT_TOLERANCE = 0.05
SECRET = "bench-secret-not-for-production-0123456789"
GATE_POSTS = 2000
TOGGLE = "sys_call_tracing"
# Iterations per measured loop: enough that set-up left inside the loop is noise.
ITERATIONS = {
    "cursor_encode": 2000,
    "cursor_decode": 2000,
    "cache_key": 2000,
    "serialize_page": 300,
    "feed_hit": 100,
    "feed_not_modified": 100,
    "bulk_get_hit": 100,
    "feed_miss": 20,
    "feed_miss_concurrent": 10,
    "bulk_get_miss": 20,
    "post_create": 20,
}


# Workloads measured in a gevent-patched process, as a gunicorn gevent worker runs the app.
GEVENT = {"feed_miss_concurrent"}


def _loop(run: Any, n: int) -> None:
    for _ in range(n):
        run()


def measure(name: str, iterations: int) -> None:
    """Inside valgrind: build the app, set the workload up, warm it, run the counted loop."""
    from app import create_app
    from bench.workloads import DETERMINISTIC, WORKLOADS

    app = create_app(
        {
            "SQLALCHEMY_DATABASE_URI": os.environ["BENCH_DATABASE_URL"],
            "REDIS_URL": os.environ["BENCH_REDIS_URL"],
            "SECRET_KEY": SECRET,
            **DETERMINISTIC,
        }
    )
    with ExitStack() as stack:
        run = WORKLOADS[name](app, stack)
        _loop(run, 5)  # warm: compiled-statement cache, pools, first-use imports
        sys.call_tracing(_loop, (run, iterations))


# `python -m bench.gate measure ...` with gevent's patches applied before anything is imported.
PATCHED = "from gevent import monkey; monkey.patch_all(); import sys; from bench.gate import main; sys.exit(main())"


def _count(name: str, iterations: int, env: dict[str, str], out_dir: Path, tree: Path = REPO) -> float:
    out = out_dir / f"callgrind.{tree.name}.{name}.out"
    cmd = [
        "valgrind",
        "--tool=callgrind",
        "--collect-atstart=no",
        f"--toggle-collect={TOGGLE}",
        f"--callgrind-out-file={out}",
        sys.executable,
        *(["-c", PATCHED] if name in GEVENT else ["-m", "bench.gate"]),
        "measure",
        name,
        "--iterations",
        str(iterations),
    ]
    redis_flush(env["BENCH_REDIS_URL"])
    done = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{name}: measurement failed\n{done.stderr[-3000:]}")
    match = re.search(r"^totals:\s+(\d+)", out.read_text(), re.MULTILINE)
    if match is None or int(match.group(1)) == 0:
        raise RuntimeError(f"{name}: callgrind counted nothing (is {TOGGLE} in the symbol table?)")
    return int(match.group(1)) / iterations


def redis_flush(url: str) -> None:
    import redis

    redis.Redis.from_url(url).flushdb()  # harness only: every workload starts from the same state


def _servers(stack: ExitStack, jobs: int) -> tuple[str, list[str]]:
    """A database URL and one Redis per concurrent job: the ones in the environment, or new ones.

    Not one Redis with a database number per job: client-tracking pushes (and FLUSHDB's) are
    not scoped to a database, so a neighbour's INCR would make this job's mirror refetch.
    """
    if os.environ.get("BENCH_DATABASE_URL") and os.environ.get("BENCH_REDIS_URL"):
        return os.environ["BENCH_DATABASE_URL"], [os.environ["BENCH_REDIS_URL"]]
    from devstack.servers import Postgres, Redis

    base = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="readwire-gate-")))
    pg = stack.enter_context(Postgres.start(base / "pg"))
    redis_urls = [stack.enter_context(Redis.start(base / f"redis{n}")).url for n in range(jobs)]
    return pg.create_database("readwire_gate"), redis_urls


def seed_database() -> None:
    """Migrate and seed BENCH_DATABASE_URL with this tree's code (run in the tree measured)."""
    from flask_migrate import upgrade

    from app import create_app
    from app.seed import seed

    app = create_app({"SQLALCHEMY_DATABASE_URI": os.environ["BENCH_DATABASE_URL"], "SECRET_KEY": SECRET})
    with app.app_context():
        upgrade(directory="migrations")
        seed(GATE_POSTS, seed=11, progress=False, if_empty=True)


def run_all(names: list[str], jobs: int, tree: Path = REPO) -> dict[str, float]:
    """Instructions per iteration of each workload, measured with the code in `tree`."""
    with ExitStack() as stack:
        database_url, redis_urls = _servers(stack, jobs)
        env = {**os.environ, "BENCH_DATABASE_URL": database_url, "BENCH_REDIS_URL": redis_urls[0]}
        env["PYTHONHASHSEED"] = "0"
        # Code under callgrind runs ~50x slower: client-side bounds meant for a live server
        # (connect, pool checkout, the database deadline) would turn slowness into errors.
        env.update(DB_CONNECT_TIMEOUT="120", DB_POOL_TIMEOUT="120", DB_DEADLINE_MS="120000")
        seed = "from bench.gate import seed_database; seed_database()"
        subprocess.run([sys.executable, "-c", seed], cwd=tree, env=env, check=True, capture_output=True)
        out_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="readwire-callgrind-")))
        slots: Queue[str] = Queue()  # a running workload holds a Redis server of its own
        for url in redis_urls:
            slots.put(url)

        def count(name: str) -> float:
            url = slots.get()
            try:
                return _count(name, ITERATIONS[name], {**env, "BENCH_REDIS_URL": url}, out_dir, tree)
            finally:
                slots.put(url)

        with ThreadPoolExecutor(max_workers=len(redis_urls)) as pool:
            futures = {name: pool.submit(count, name) for name in names}
            return {name: future.result() for name, future in futures.items()}


def measure_ref(names: list[str], jobs: int, ref: str) -> dict[str, float]:
    """The same measurements for a git ref, in a temporary worktree (same machine, same run)."""
    with tempfile.TemporaryDirectory(prefix="readwire-gate-ref-") as tmp:
        tree = Path(tmp) / "ref"
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(tree), ref], cwd=REPO, check=True, capture_output=True
        )
        try:
            if not (tree / "bench" / "workloads.py").exists():
                raise SystemExit(f"{ref} has no bench/workloads.py: compare with the committed baseline instead")
            return run_all(names, jobs, tree)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=REPO, capture_output=True)


def load_baseline() -> dict[str, Any]:
    if not BASELINE.exists():
        return {"tolerance": DEFAULT_TOLERANCE, "benchmarks": {}, "history": []}
    baseline: dict[str, Any] = json.loads(BASELINE.read_text())
    return baseline


def compare(current: dict[str, float], baseline: dict[str, Any]) -> tuple[list[list[str]], bool]:
    """Rows of the report table and whether every workload is within its tolerance."""
    rows, ok = [], True
    default = float(baseline.get("tolerance", DEFAULT_TOLERANCE))
    for name, value in current.items():
        known = baseline["benchmarks"].get(name)
        if known is None:
            rows.append([name, "-", f"{value:,.0f}", "new", "no baseline (accept to record it)"])
            continue
        tolerance = float(known.get("tolerance", default))
        change = value / known["instructions"] - 1
        if change >= tolerance:
            status, ok = f"SLOWER (limit +{tolerance:.0%})", False
        elif change <= -tolerance:
            status = "faster: accept a new baseline to lock it in"
        else:
            status = "ok"
        rows.append([name, f"{known['instructions']:,.0f}", f"{value:,.0f}", f"{change:+.2%}", status])
    return rows, ok


def print_table(rows: list[list[str]]) -> None:
    header = ["workload", "baseline Ir/iter", "current Ir/iter", "change", "status"]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)))


def accept(current: dict[str, float], reason: str) -> None:
    baseline = load_baseline()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    entry = {
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "commit": commit.stdout.strip() or "unknown",
        "reason": reason,
        "changes": {
            name: (
                f"{value / baseline['benchmarks'][name]['instructions'] - 1:+.2%}"
                if name in baseline["benchmarks"]
                else "new"
            )
            for name, value in current.items()
        },
    }
    for name, value in current.items():
        baseline["benchmarks"].setdefault(name, {})["instructions"] = round(value)
    baseline["history"] = [*baseline.get("history", []), entry]
    BASELINE.write_text(json.dumps(baseline, indent=2) + "\n")
    print(f"baseline updated: {BASELINE.relative_to(REPO)} ({reason})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gate", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for command in ("check", "accept"):
        p = sub.add_parser(command)
        p.add_argument("--only", help="comma-separated workload names (default: all)")
        p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
        if command == "accept":
            p.add_argument("--reason", required=True, help="why the new counts are the right ones")
        else:
            p.add_argument(
                "--against", metavar="REF", help="measure REF in this run instead of reading the baseline file"
            )
    m = sub.add_parser("measure", help="internal: one workload, inside valgrind")
    m.add_argument("name")
    m.add_argument("--iterations", type=int, required=True)
    args = parser.parse_args(argv)

    if args.command == "measure":
        measure(args.name, args.iterations)
        return 0
    names = args.only.split(",") if args.only else list(ITERATIONS)
    unknown = set(names) - set(ITERATIONS)
    if unknown:
        parser.error(f"unknown workloads: {', '.join(sorted(unknown))}")
    current = run_all(names, args.jobs)
    if args.command == "accept":
        accept(current, args.reason)
        return 0
    if args.against:
        reference = measure_ref(names, args.jobs, args.against)
        baseline = {**load_baseline(), "benchmarks": {n: {"instructions": v} for n, v in reference.items()}}
    else:
        baseline = load_baseline()
    rows, ok = compare(current, baseline)
    print_table(rows)
    print("gate: PASS" if ok else "gate: FAIL (a workload got slower; fix it, or accept with a reason)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
