"""Do idle Server-Sent Events streams slow the cache-hit path? Issue 13's "1,000 idle streams on one worker
add < 5% to the hit path's p99", measured side by side in one run.

    python -m bench.sse_idle [--streams 1000] [--rate 200 | --concurrency 4] [--phase 20] [--pairs 2]
                             [--stack-dir .stack]

Uses the local stack's PostgreSQL and Redis (`make stack`), and starts its own gunicorn with ONE gevent
worker pinned to one core (taskset), so every stream and every request share that worker. This process,
pinned to the other core, is an open-loop generator (gevent): GETs of a warm feed page at a fixed rate on
keep-alive connections, each latency measured from its scheduled send time (no coordinated omission).
(`--concurrency C`: C connections back to back instead, a closed loop.) Phases alternate without and with N
idle streams held open (heartbeats only), `--pairs` rounds, the order flipped every round; the report gives
p50/p99 per phase, each round's p99 ratio (with/without) and their median, the worker's CPU per request and
its RSS growth per stream. Traffic goes to 127.0.0.1 only, and every phase is bounded in time.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402
from gevent.queue import Queue  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
PATH = "/api/v1/feed?limit=20"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def half_closed(port: int) -> int:
    """Server-side connections on `port` whose client has left (CLOSE_WAIT in /proc/net/tcp): streams the
    worker has not noticed yet. It notices one only when a write to it fails, a heartbeat or two later."""
    local = f"0100007F:{port:04X}"
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        count += fields[1] == local and fields[3] == "08"
    return count


def wait_streams_gone(port: int, timeout: float) -> tuple[float, int]:
    """Wait until the worker has let go of every stream whose client left; (seconds waited, still held)."""
    started = time.monotonic()
    while True:
        left = half_closed(port)
        if left == 0 or time.monotonic() - started > timeout:
            return time.monotonic() - started, left
        gevent.sleep(0.5)


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/PID/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Conn:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.file = self.sock.makefile("rb")
        self.request = f"GET {PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()

    def get(self) -> int:
        self.sock.sendall(self.request)
        status = int(self.file.readline().split()[1])
        length = 0
        while True:
            line = self.file.readline()
            if line in (b"\r\n", b""):
                break
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        self.file.read(length)
        return status


def open_loop(port: int, rate: float, seconds: float, pool: Queue) -> list[float]:
    """Latencies (ms) from each scheduled send time, at `rate` req/s for `seconds`."""
    latencies: list[float] = []
    errors = 0
    start = time.perf_counter() + 0.2
    count = int(rate * seconds)

    def one(due: float) -> None:
        nonlocal errors
        conn = pool.get() if pool.qsize() else Conn(port)
        try:
            if conn.get() != 200:
                errors += 1
            latencies.append((time.perf_counter() - due) * 1000)
            pool.put(conn)
        except (OSError, ValueError, IndexError):  # a closed or broken connection: counted, not reused
            errors += 1
            conn.sock.close()

    jobs = []
    for i in range(count):
        due = start + i / rate
        gevent.sleep(max(0.0, due - time.perf_counter()))
        jobs.append(gevent.spawn(one, due))
    gevent.joinall(jobs, timeout=30)
    if errors:
        print(f"  {errors} errors", flush=True)
    return latencies


def closed_loop(port: int, concurrency: int, seconds: float) -> list[float]:
    """Latencies (ms) of back-to-back GETs on `concurrency` keep-alive connections for `seconds`."""
    latencies: list[float] = []
    errors = 0
    end = time.perf_counter() + seconds

    def one() -> None:
        nonlocal errors
        conn = Conn(port)
        while time.perf_counter() < end:
            started = time.perf_counter()
            try:
                if conn.get() != 200:
                    errors += 1
            except (OSError, ValueError, IndexError):  # gunicorn closed it: a new one, counted
                errors += 1
                conn.sock.close()
                conn = Conn(port)
                continue
            latencies.append((time.perf_counter() - started) * 1000)
        conn.sock.close()

    gevent.joinall([gevent.spawn(one) for _ in range(concurrency)], timeout=seconds + 30)
    if errors:
        print(f"  {errors} errors", flush=True)
    return latencies


def hold_streams(port: int, count: int) -> tuple[list[socket.socket], list[gevent.Greenlet], dict[str, int]]:
    seen = {"open": 0, "bytes": 0}
    socks: list[socket.socket] = []

    def reader(sock: socket.socket) -> None:
        try:
            sock.sendall(f"GET /api/v1/stream HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
            first = sock.recv(4096)
            if b" 200 " in first.split(b"\r\n", 1)[0]:
                seen["open"] += 1
            while True:
                data = sock.recv(4096)
                if not data:
                    return
                seen["bytes"] += len(data)
        except OSError:
            return

    greenlets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=None)
        socks.append(sock)
        greenlets.append(gevent.spawn(reader, sock))
        gevent.sleep(0.002)
    deadline = time.monotonic() + 60
    while seen["open"] < count and time.monotonic() < deadline:
        gevent.sleep(0.1)
    return socks, greenlets, seen


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--streams", type=int, default=1000)
    p.add_argument("--rate", type=float, default=200.0, help="hit requests/s offered in every phase")
    p.add_argument("--phase", type=float, default=20.0, help="seconds per phase")
    p.add_argument("--pairs", type=int, default=2, help="rounds: one phase without and one with the streams each")
    p.add_argument(
        "--concurrency", type=int, default=0,
        help="closed loop: this many connections sending back to back (0: open loop at --rate)",
    )  # fmt: skip
    p.add_argument("--stack-dir", type=Path, default=REPO / ".stack")
    p.add_argument("--server-core", type=int, default=1)
    p.add_argument("--client-core", type=int, default=0)
    args = p.parse_args(argv)
    state = json.loads((args.stack_dir / "state.json").read_text())
    os.sched_setaffinity(0, {args.client_core})
    port = free_port()
    env = {
        **os.environ,
        **state.get("env", {}),
        "DATABASE_URL": state["database_url"],
        "REDIS_URL": state["redis_url"],
        "WEB_CONCURRENCY": "1",
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        # Room for streams whose client left but the worker has not noticed yet (see wait_streams_gone).
        "SSE_MAX_STREAMS": str(3 * args.streams),
        "SSE_MAX_PER_CLIENT": str(3 * args.streams),
        "TRUSTED_PROXY_HOPS": "0",
        "PROMETHEUS_MULTIPROC_DIR": "",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR")
    taskset = shutil.which("taskset")
    argv_server = [str(REPO / ".venv/bin/gunicorn"), "-c", str(REPO / "gunicorn.conf.py"), "app:create_app()"]
    if taskset:
        argv_server = [taskset, "-c", str(args.server_core), *argv_server]
    server = subprocess.Popen(argv_server, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if Conn(port).get() == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("gunicorn did not answer")
            gevent.sleep(0.2)
        worker = int(Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split()[0])
        pool: Queue = Queue()
        open_loop(port, args.rate, 3.0, pool)  # warm: near cache, connections
        with open("/proc/loadavg") as f:
            print(f"load average before: {f.read().split()[:3]}", flush=True)
        results: dict[str, list[list[float]]] = {"without": [], "with": []}
        cpu: dict[str, list[float]] = {"without": [], "with": []}
        memory: list[float] = []
        for pair in range(args.pairs):
            for label in ("without", "with") if pair % 2 == 0 else ("with", "without"):
                socks: list[socket.socket] = []
                greenlets: list[gevent.Greenlet] = []
                if label == "with":
                    before = rss(worker)
                    socks, greenlets, seen = hold_streams(port, args.streams)
                    gevent.sleep(2.0)
                    memory.append((rss(worker) - before) / max(1, seen["open"]))
                    print(f"  {seen['open']} streams open", flush=True)
                while pool.qsize():  # fresh connections each phase: gunicorn closes idle keep-alive ones
                    pool.get().sock.close()
                cpu_before = cpu_seconds(worker)
                if args.concurrency:
                    lat = closed_loop(port, args.concurrency, args.phase)
                else:
                    lat = open_loop(port, args.rate, args.phase, pool)
                results[label].append(lat)
                # The worker's CPU per request: what the streams cost it, whatever else the machine runs
                # (its latency percentiles move with the other load; its own CPU time much less).
                cpu[label].append((cpu_seconds(worker) - cpu_before) * 1000 / max(1, len(lat)))
                print(f"pair {pair + 1} {label:7} streams: {len(lat)} requests, p50 {percentile(lat, 0.5):.2f} ms, "
                      f"p99 {percentile(lat, 0.99):.2f} ms, max {max(lat):.1f} ms, "
                      f"worker CPU {cpu[label][-1]:.3f} ms/request", flush=True)  # fmt: skip
                for sock in socks:
                    sock.close()
                gevent.killall(greenlets, timeout=5)
                if socks:  # the next phase starts once the worker has let go of these streams
                    waited, left = wait_streams_gone(port, 4 * 15.0)
                    print(f"  streams released by the worker after {waited:.1f} s ({left} still held)", flush=True)
        p99 = {label: statistics.median(percentile(lat, 0.99) for lat in runs) for label, runs in results.items()}
        p50 = {label: statistics.median(percentile(lat, 0.5) for lat in runs) for label, runs in results.items()}
        # Each round's two phases ran back to back under much the same machine load: their ratio
        # cancels most of it, the median of the rounds' ratios the rest of the drift.
        rounds = zip(results["with"], results["without"], strict=True)
        ratios = [percentile(w, 0.99) / percentile(wo, 0.99) for w, wo in rounds]
        with open("/proc/loadavg") as f:
            print(f"load average after: {f.read().split()[:3]}")
        mode = f"{args.concurrency} connections back to back" if args.concurrency else f"{args.rate:g} req/s open loop"
        print(
            f"hit p99 with {args.streams} idle streams / without, per round ({mode}): "
            f"{[round(r, 3) for r in ratios]}: median **{statistics.median(ratios):.3f}**"
        )
        print(
            f"median p99 without {p99['without']:.2f} ms, with {args.streams} idle streams {p99['with']:.2f} ms: "
            f"ratio {p99['with'] / p99['without']:.3f}; p50 {p50['without']:.2f} / {p50['with']:.2f} ms; "
            f"worker RSS per idle stream {statistics.median(memory) / 1024:.1f} KiB"
        )
        ms = {label: statistics.median(values) for label, values in cpu.items()}
        print(
            f"worker CPU per request (median of phases): without {ms['without']:.3f} ms, with {ms['with']:.3f} ms: "
            f"ratio {ms['with'] / ms['without']:.3f}; per phase without {[round(v, 3) for v in cpu['without']]}, "
            f"with {[round(v, 3) for v in cpu['with']]}"
        )
        return 0
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


if __name__ == "__main__":
    sys.exit(main())
