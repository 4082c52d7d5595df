"""Wall-clock A/B gate: end-to-end throughput of the working tree against a baseline ref.

    python -m bench.ab                      # baseline: merge-base with main (previous commit on a clean main)
    python -m bench.ab --baseline v1.2 --pairs 7 --duration 10

Both trees are served the same way, side by side on one throwaway PostgreSQL (a database
each, migrated and seeded by that tree's own code) and one Redis (a database number each):
gunicorn with the tree's gunicorn.conf.py (gevent workers) on a port of its own. wrk then
drives a fixed mix of public GETs (feeds, popular, posts, directory: mostly cache hits, as in
production) at one server, then the other, alternating which goes first, `--pairs` times.
Each pair gives a ratio working/baseline measured minutes apart at most, so slow drifts of a
shared, noisy machine cancel out; the gate takes the median ratio and fails below 0.90.

Each pair also runs a miss mix (`--miss-duration`, 0 to skip): feed URLs no earlier request
used (bench/compare/urls.py: real cursors walked from `next`, combined with page sizes), so
every answer is computed: the pool, driver, statement and render work of the miss path. Both
sides of a pair get the same slice of that list; each pair a fresh slice. The gate fails when
either mix's median ratio is below the threshold.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SECRET = "ab-gate-secret-not-for-production-0123456789"
LUA = """
local paths = {}
for line in io.lines(os.getenv("AB_PATHS")) do paths[#paths + 1] = line end
local i = 0
request = function()
  i = i % #paths + 1
  return wrk.format("GET", paths[i])
end
"""


@dataclass
class Side:
    name: str
    tree: Path
    port: int
    database_url: str
    redis_url: str
    server: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()


def default_baseline() -> str:
    """The merge-base with main; on main itself the previous commit (or HEAD when the tree is dirty)."""
    head = git("rev-parse", "HEAD")
    try:
        base = git("merge-base", "HEAD", "main")
    except subprocess.CalledProcessError:
        return "HEAD~1"
    dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    if base == head and not dirty:
        return "HEAD~1"
    return base


def _env(side: Side) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHONPATH", "FLASK_"))}
    env.update(
        DATABASE_URL=side.database_url,
        REDIS_URL=side.redis_url,
        SECRET_KEY=SECRET,
        GUNICORN_BIND=f"127.0.0.1:{side.port}",
        WEB_CONCURRENCY=os.environ.get("AB_WORKERS", "1"),
        PYTHONHASHSEED="0",
    )
    return env


def prepare(side: Side, posts: int) -> None:
    flask = [sys.executable, "-m", "flask", "--app", "app"]
    for cmd in (["db", "upgrade"], ["seed", "--posts", str(posts), "--if-empty", "--no-progress"]):
        subprocess.run(flask + cmd, cwd=side.tree, env=_env(side), check=True, capture_output=True)


def serve(side: Side, stack: ExitStack, log_dir: Path) -> None:
    conf = side.tree / "gunicorn.conf.py"
    if not conf.exists():
        conf = REPO / "gunicorn.conf.py"
    log = open(log_dir / f"gunicorn-{side.name}.log", "wb")  # noqa: SIM115 (closed by the stack)
    stack.callback(log.close)
    side.server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", str(conf), "app:create_app()"],
        cwd=side.tree,
        env=_env(side),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    stack.callback(_stop, side.server)
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(side.url + "/healthz", timeout=2).close()
            return
        except OSError:
            if time.monotonic() > deadline or side.server.poll() is not None:
                raise RuntimeError(f"{side.name}: gunicorn did not come up (see {log.name})") from None
            time.sleep(0.2)


def _stop(server: subprocess.Popen[bytes]) -> None:
    server.terminate()
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()


def request_mix(side: Side) -> list[str]:
    """Paths a public client asks for, Zipf-ish: the global feed and popular most often."""

    def get(path: str) -> object:
        with urllib.request.urlopen(side.url + path, timeout=10) as response:
            return json.load(response)

    categories = [c["slug"] for c in get("/api/v1/categories")["data"]][:8]  # type: ignore[index]
    tags = [t["slug"] for t in get("/api/v1/tags?limit=30")["data"]]  # type: ignore[index]
    posts = [p["id"] for p in get("/api/v1/feed?limit=100")["data"]]  # type: ignore[index]
    authors = sorted({p["author"]["username"] for p in get("/api/v1/feed?limit=100")["data"]})[:10]  # type: ignore[index]
    paths = ["/api/v1/feed"] * 20 + ["/api/v1/popular"] * 5 + ["/api/v1/feed?limit=50"] * 5
    paths += [f"/api/v1/categories/{c}/feed" for c in categories for _ in range(3)]
    paths += [f"/api/v1/tags/{t}/feed" for t in tags]
    paths += [f"/api/v1/authors/{a}/feed" for a in authors]
    paths += [f"/api/v1/posts/{p}" for p in posts[:40]]
    paths += [f"/api/v1/posts/{p}/comments" for p in posts[:10]]
    paths += [f"/api/v1/posts?ids={','.join(map(str, posts[:20]))}", "/api/v1/categories", "/api/v1/tags"]
    return paths


def run_wrk(
    side: Side, duration: float, connections: int, script: Path, paths_file: Path, args: tuple[str, ...] = ()
) -> dict[str, float]:
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--latency", "-s", str(script), side.url]
    cmd += ["--", *args] if args else []
    done = subprocess.run(cmd, env={**os.environ, "AB_PATHS": str(paths_file)}, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout}{done.stderr}")
    out = done.stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"{side.name}: {errors.group(1)} failed responses under load:\n{out}")
    if "EXHAUSTED" in out:
        raise RuntimeError(f"{side.name}: the miss list ran out (shorter --miss-duration or more --posts):\n{out}")
    return {"rps": rps}


def miss_list(side: Side, out: Path) -> tuple[Path, int]:
    """Distinct feed URLs (bench/compare/urls.py) and the wrk script that never repeats one.

    Walking at a page size the list leaves out computes (and caches) only the walked pages."""
    from bench.compare import urls

    listing = urls.collect(side.url, scopes=4, walk_limit=50, max_pages=300, limits=range(10, 31), seed=1)
    _, script = urls.write(listing, out)
    return script, len(listing)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", help="git ref to compare against (default: see above)")
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per run")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--posts", type=int, default=20000)
    parser.add_argument("--threshold", type=float, default=0.90)
    parser.add_argument("--miss-duration", type=float, default=4.0, help="seconds per miss-mix run (0: skip)")
    args = parser.parse_args(argv)
    ref = args.baseline or default_baseline()
    commit = git("rev-parse", "--short", ref)
    print(f"A/B: working tree vs {ref} ({commit}); {args.pairs} pairs x {args.duration:g} s, wrk -c{args.connections}")

    from devstack.servers import Postgres, Redis, free_port

    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="readwire-ab-")))
        base_tree = tmp / "baseline"
        git("worktree", "add", "--detach", str(base_tree), commit)
        stack.callback(git, "worktree", "remove", "--force", str(base_tree))
        pg = stack.enter_context(Postgres.start(tmp / "pg"))
        rd = stack.enter_context(Redis.start(tmp / "redis"))
        redis_base = rd.url.rsplit("/", 1)[0]
        sides = [
            Side("baseline", base_tree, free_port(), pg.create_database("ab_baseline"), f"{redis_base}/1"),
            Side("working", REPO, free_port(), pg.create_database("ab_working"), f"{redis_base}/2"),
        ]
        for side in sides:
            prepare(side, args.posts)
            serve(side, stack, tmp)
        script = tmp / "mix.lua"
        script.write_text(LUA)
        paths_file = tmp / "paths.txt"
        paths_file.write_text("\n".join(request_mix(sides[0])) + "\n")
        for side in sides:  # warm both caches and both interpreters
            run_wrk(side, args.warmup, args.connections, script, paths_file)
        slices: list[tuple[str, ...]] = []
        if args.miss_duration > 0:
            miss_script, count = miss_list(sides[0], tmp / "misses")
            for side in sides[1:]:  # the other side computes its walked pages too: same cache state
                miss_list(side, tmp / f"misses-{side.name}")
            size = count // (args.pairs + 1)
            slices = [("1", str(1 + k * size), str((k + 1) * size)) for k in range(args.pairs + 1)]
            print(f"miss mix: {count} distinct feed URLs, {size} per run")
            for side in sides:  # warm the miss path (the first slice is spent here, never measured)
                run_wrk(
                    side, min(args.warmup, args.miss_duration), args.connections, miss_script, paths_file, slices[0]
                )

        pairs = []
        for index in range(args.pairs):
            order = sides if index % 2 == 0 else sides[::-1]
            result = {side.name: run_wrk(side, args.duration, args.connections, script, paths_file) for side in order}
            ratio = result["working"]["rps"] / result["baseline"]["rps"]
            pair: dict[str, object] = {
                "first": order[0].name,
                **{k: v["rps"] for k, v in result.items()},
                "ratio": ratio,
            }
            base, work = result["baseline"]["rps"], result["working"]["rps"]
            line = f"  pair {index + 1}: hits baseline {base:7.0f} working {work:7.0f} ratio {ratio:.3f}"
            if slices:
                part = slices[index + 1]
                misses = {
                    side.name: run_wrk(side, args.miss_duration, args.connections, miss_script, paths_file, part)
                    for side in order
                }
                miss_ratio = misses["working"]["rps"] / misses["baseline"]["rps"]
                pair["misses"] = {**{k: v["rps"] for k, v in misses.items()}, "ratio": miss_ratio}
                base, work = misses["baseline"]["rps"], misses["working"]["rps"]
                line += f" | misses baseline {base:6.0f} working {work:6.0f} ratio {miss_ratio:.3f}"
            pairs.append(pair)
            print(line)

    medians = {"hits": statistics.median(float(p["ratio"]) for p in pairs)}  # type: ignore[arg-type]
    if slices:
        medians["misses"] = statistics.median(p["misses"]["ratio"] for p in pairs)  # type: ignore[index]
    passed = all(m >= args.threshold for m in medians.values())
    for mix, median in medians.items():
        verdict = "PASS" if median >= args.threshold else "FAIL"
        print(f"{mix}: median ratio working/baseline {median:.3f} (fail below {args.threshold:.2f}): {verdict}")
    results = REPO / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (results / f"ab-{stamp}.json").write_text(
        json.dumps({"baseline": ref, "commit": commit, "args": vars(args), "pairs": pairs, "median": medians}, indent=2)
    )
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
