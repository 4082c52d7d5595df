"""Serving benchmark: what the edge and the workers cost compared with doing nothing.

    make stack && make serve-bench        # python -m devstack.serve_bench [--duration 10 ...]

In one run, with wrk on 127.0.0.1, for one hot feed page (same bytes everywhere):
  (a) Nginx: the page from the microcache (HIT)  vs  Nginx serving a static file of those bytes;
  (b) gunicorn: the real app (Redis page-cache hit)  vs  a bare Flask view returning those bytes
      (devstack/bare_app.py), both under gunicorn.conf.py with the same settings.
Targets: (a) >= 0.8, (b) >= 0.7 of the reference's requests/s.

Cores (the machine has two): every server under test is pinned to CPU 0 (one Nginx worker, one
gunicorn worker) and wrk (one thread) to CPU 1, so client and server never steal each other's
core. Redis and PostgreSQL are the stack's (`make stack`), unpinned. The servers' CPU use during
each run is reported too: a server below ~90% of its core means the client was the limit.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from devstack.servers import HOST, free_port
from devstack.stack import (
    DEFAULT_DIR,
    GUNICORN_CONF,
    REPO,
    VENV_BIN,
    Stack,
    end_session,
    group_members,
    nginx_values,
    render_nginx,
)

SERVER_CPU, CLIENT_CPU = "0", "1"
TARGETS = {"nginx": 0.8, "gunicorn": 0.7}
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


@dataclass
class Run:
    name: str
    url: str
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    socket_errors: str
    server_cpu_pct: float
    server_core_busy_pct: float

    @property
    def per_cpu_second(self) -> float:
        """Requests per second of server CPU: the capacity, even when the client was the limit."""
        return self.requests_per_s / max(self.server_cpu_pct / 100, 1e-9)


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * _UNITS[unit]


def parse_wrk(output: str) -> dict[str, Any]:
    """Requests/s, p50/p99 (ms), request count and error lines from `wrk --latency` output."""
    latency = dict(re.findall(r"^\s+(50|99)%\s+([\d.]+(?:us|ms|s))\s*$", output, re.M))
    errors = re.search(r"Socket errors: (.*)", output)
    return {
        "requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),  # type: ignore[union-attr]
        "p50_ms": _ms(latency["50"]),
        "p99_ms": _ms(latency["99"]),
        "requests": int(re.search(r"(\d+) requests in", output).group(1)),  # type: ignore[union-attr]
        "non_2xx": int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", output)) else 0,
        "socket_errors": errors.group(1).strip() if errors else "",
    }


def _cpu_seconds(pgid: int) -> float:
    """utime + stime of every live process in the group, in seconds."""
    total = 0
    for pid in group_members(pgid):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _core_times(cpu: str) -> tuple[int, int]:
    """(busy, total) jiffies of one core since boot, from /proc/stat."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{cpu} "):
            values = [int(v) for v in line.split()[1:]]
            idle = values[3] + values[4]
            return sum(values) - idle, sum(values)
    raise LookupError(f"cpu{cpu} not in /proc/stat")


def wrk(name: str, url: str, server_pgid: int, args: argparse.Namespace) -> Run:
    base = ["taskset", "-c", CLIENT_CPU, "wrk", "-t1", f"-c{args.connections}"]
    subprocess.run([*base, f"-d{args.warmup}s", url], capture_output=True, check=True)
    cpu0, t0, core0 = _cpu_seconds(server_pgid), time.monotonic(), _core_times(SERVER_CPU)
    res = subprocess.run([*base, f"-d{args.duration}s", "--latency", url], capture_output=True, text=True)
    cpu = (_cpu_seconds(server_pgid) - cpu0) / (time.monotonic() - t0) * 100
    core1 = _core_times(SERVER_CPU)
    # The server's core as a whole: busy well above the server's own share means other
    # processes (not ours) ran there and the numbers are not clean.
    core_busy = (core1[0] - core0[0]) / max(1, core1[1] - core0[1]) * 100
    if res.returncode:
        raise RuntimeError(f"wrk failed on {url}:\n{res.stdout}{res.stderr}")
    return Run(
        name=name,
        url=url,
        server_cpu_pct=round(cpu, 1),
        server_core_busy_pct=round(core_busy, 1),
        **parse_wrk(res.stdout),
    )


def fetch(port: int, path: str, headers: Mapping[str, str] | None = None) -> tuple[int, list[tuple[str, str]], bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        conn.request("GET", path, headers=dict(headers or {}))
        resp = conn.getresponse()
        return resp.status, resp.getheaders(), resp.read()
    finally:
        conn.close()


def _wait_http(port: int, path: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        with contextlib.suppress(OSError):
            if fetch(port, path)[0] == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{proc.args} did not come up:\n{log.read_text(errors='replace')[-3000:]}")


@contextlib.contextmanager
def pinned(argv: list[str], env: Mapping[str, str], log: Path, ready: tuple[int, str]) -> Iterator[int]:
    """A server on the server core, in its own process group; yields that group id."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["taskset", "-c", SERVER_CPU, *argv],
            cwd=REPO,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_http(*ready, proc, log)
        yield proc.pid
    finally:
        end_session(proc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.serve_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="the running stack (default .stack/)")
    parser.add_argument("--path", default="/api/v1/feed?limit=20", help="the hot page")
    parser.add_argument("--duration", type=int, default=10, help="seconds measured per target")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of unmeasured load first")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3, help="each round measures every target once")
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "serve-bench.json")
    args = parser.parse_args(argv)
    if not shutil.which("wrk") or not shutil.which("taskset"):
        print("serve-bench: needs wrk and taskset (bash scripts/ensure-servers.sh --bench)", file=sys.stderr)
        return 2
    stack = Stack(args.dir)
    state = stack.read_state()
    if not state or not all(stack.running(state).values()):
        print(f"serve-bench: no running stack in {stack.root}; run `make stack` first", file=sys.stderr)
        return 2

    work = stack.root / "bench"
    static_dir, nginx_dir = work / "static", work / "nginx"
    for d in (static_dir, nginx_dir):
        d.mkdir(parents=True, exist_ok=True)
    app_port = int(state["services"]["app"]["port"])
    status, headers, body = fetch(app_port, args.path)
    if status != 200:
        raise SystemExit(f"{args.path} answered {status} on the stack's app")
    captured = work / "response.json"
    captured.write_text(json.dumps({"status": status, "headers": headers, "body": body.decode("latin-1")}))
    (static_dir / "page.json").write_bytes(body)

    settings = state["settings"]
    env = {**os.environ, **settings, **state["env"], "WEB_CONCURRENCY": "1", "PYTHONUNBUFFERED": "1"}
    gunicorn = [str(VENV_BIN / "gunicorn"), "-c", str(GUNICORN_CONF)]
    real_port, bare_port, nginx_port = free_port(), free_port(), free_port()
    values = nginx_values(
        {**settings, "NGINX_PORT": str(nginx_port), "APP_PORT": str(app_port), "NGINX_WORKER_PROCESSES": "1"},
        nginx_dir,
        static_dir,
        work,
    )
    conf = nginx_dir / "nginx.conf"
    conf.write_text(render_nginx(values))
    nginx = [shutil.which("nginx") or "/usr/sbin/nginx", "-p", str(nginx_dir), "-c", str(conf), "-g", "daemon off;"]
    real_env = {**env, "GUNICORN_BIND": f"{HOST}:{real_port}"}
    bare_env = {**env, "GUNICORN_BIND": f"{HOST}:{bare_port}", "BARE_RESPONSE": str(captured)}
    page, static = args.path, "/_static/page.json"
    with (
        pinned(nginx, env, work / "nginx.log", (nginx_port, static)) as nginx_group,
        pinned([*gunicorn, "app:create_app()"], real_env, work / "real.log", (real_port, "/healthz")) as real_group,
        pinned([*gunicorn, "devstack.bare_app:app"], bare_env, work / "bare.log", (bare_port, "/")) as bare_group,
    ):
        checks = {
            "nginx page": fetch(nginx_port, page),
            "nginx static": fetch(nginx_port, static),
            "gunicorn app": fetch(real_port, page),
            "gunicorn bare": fetch(bare_port, page),
        }
        for what, (code, _, got) in checks.items():
            if code != 200 or got != body:
                raise SystemExit(f"{what}: not the same bytes as the captured page (status {code})")
        cache = dict(fetch(nginx_port, page)[1]).get("X-Cache-Status")
        print(f"serve-bench: {len(body)} bytes per page; nginx cache {cache} after warm-up", file=sys.stderr)
        base = f"http://{HOST}"
        targets = [
            ("nginx microcache HIT", f"{base}:{nginx_port}{page}", nginx_group),
            ("nginx static file", f"{base}:{nginx_port}{static}", nginx_group),
            ("gunicorn app (Redis hit)", f"{base}:{real_port}{page}", real_group),
            ("gunicorn bare view", f"{base}:{bare_port}{page}", bare_group),
        ]
        load_before = Path("/proc/loadavg").read_text().split()[:3]
        # Rounds interleave the pairs, so a noisy neighbour hits both sides of a ratio alike.
        rounds = [[wrk(name, url, group, args) for name, url, group in targets] for _ in range(args.rounds)]

    print(f"wrk -t1 -c{args.connections} -d{args.duration}s --latency (CPU {CLIENT_CPU}); servers on CPU {SERVER_CPU}")
    print(f"page {args.path}: {len(body)} bytes; load average before: {' '.join(load_before)}\n")
    header = "| round | target | requests/s | p50 ms | p99 ms | server CPU % | req per CPU-s | CPU 0 busy % | non-2xx |"
    print(header)
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for number, runs in enumerate(rounds, 1):
        for run in runs:
            print(
                f"| {number} | {run.name} | {run.requests_per_s:,.0f} | {run.p50_ms:.2f} | {run.p99_ms:.2f} | "
                f"{run.server_cpu_pct:.0f} | {run.per_cpu_second:,.0f} | {run.server_core_busy_pct:.0f} | "
                f"{run.non_2xx}{' (socket errors: ' + run.socket_errors + ')' if run.socket_errors else ''} |"
            )
    per_round = [
        {"nginx": r[0].requests_per_s / r[1].requests_per_s, "gunicorn": r[2].requests_per_s / r[3].requests_per_s}
        for r in rounds
    ]
    ratios = {layer: statistics.median(ratio[layer] for ratio in per_round) for layer in TARGETS}
    efficiency = {
        "nginx": statistics.median(r[0].per_cpu_second / r[1].per_cpu_second for r in rounds),
        "gunicorn": statistics.median(r[2].per_cpu_second / r[3].per_cpu_second for r in rounds),
    }
    print()
    for layer, ratio in ratios.items():
        verdict = "met" if ratio >= TARGETS[layer] else "MISSED"
        each = ", ".join(f"{r[layer]:.2f}" for r in per_round)
        print(
            f"{layer}: median {ratio:.2f} of the reference's requests/s (rounds: {each}; target >= "
            f"{TARGETS[layer]}): {verdict}; per server CPU-second: {efficiency[layer]:.2f}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "bytes": len(body),
        "path": args.path,
        "rounds": [[asdict(r) for r in runs] for runs in rounds],
        "ratios": ratios,
        "per_cpu_second_ratios": efficiency,
        "load_before": load_before,
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if all(ratios[k] >= TARGETS[k] for k in TARGETS) else 1


if __name__ == "__main__":
    sys.exit(main())
