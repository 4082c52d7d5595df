"""Worker loss and reloads under load through Nginx: no idempotent GET is lost.

The guarantee: Nginx replays every GET whose answer had not started when its worker died or
retired (proxy_next_upstream), so each client gets a whole 200; a response is never half sent,
because gunicorn sends a response's head with its first body bytes (app/compat.py). The tests
wait for progress (requests answered, requests queued at the stopped worker), not for a time,
so a busy machine makes them slower, not different."""

from __future__ import annotations

import os
import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from devstack.stack import children
from tests.stack.conftest import WORKERS, Load, StackInfo, request, wait_for

pytestmark = pytest.mark.slow  # stands up real servers (gunicorn, Nginx, PostgreSQL, Redis)

UPSTREAM_FAILURE = ("upstream prematurely closed", "reset by peer", "Broken pipe", "upstream timed out")
# Requests answered before a fault (Nginx then holds keep-alive connections to every worker) and
# after the recovery (the replacement workers answer): progress, not a time.
BEFORE = 100
AFTER = 100
BURST = 40  # concurrent requests sent while the victim is stopped (Nginx keeps 32 idle upstream connections)
PATIENCE = 120.0  # s: an upper bound for each wait, generous for a loaded 2-core machine
LOAD_SECONDS = 5 * PATIENCE


def _paths(post_ids: list[int]) -> list[str]:
    # /healthz and /readyz are never cached, so they always reach gunicorn; the posts mostly miss too.
    return [path for pid in post_ids[:40] for path in ("/healthz", f"/api/v1/posts/{pid}", "/readyz")]


def _upstream_failures(stack: StackInfo, offset: int) -> list[str]:
    log = (stack.logs / "nginx-error.log").read_bytes()[offset:].decode(errors="replace")
    return [line for line in log.splitlines() if any(marker in line for marker in UPSTREAM_FAILURE)]


def _error_log_size(stack: StackInfo) -> int:
    path = stack.logs / "nginx-error.log"
    return path.stat().st_size if path.exists() else 0


def _connections(pid: int, port: int) -> list[int]:
    """Unread bytes of each established connection to ``port`` that process ``pid`` holds
    (none when the process is gone)."""
    inodes = set()
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except FileNotFoundError:
        return []
    for fd in fds:
        try:
            target = os.readlink(fd)
        except FileNotFoundError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target.removeprefix("socket:[").removesuffix("]"))
    unread = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, queues, inode = fields[1], fields[3], fields[4], fields[9]
            if state == "01" and inode in inodes and int(local.rsplit(":", 1)[1], 16) == port:
                unread.append(int(queues.split(":")[1], 16))
    return unread


def requests_queued_at(pid: int, port: int) -> int:
    """Connections to ``port`` on which process ``pid`` has request bytes it has not read (a
    stopped worker's keep-alive connections on which Nginx sent it a request)."""
    return sum(1 for unread in _connections(pid, port) if unread > 0)


def _nginx_errors(stack: StackInfo, offset: int) -> list[str]:
    """Nginx's error log since ``offset``, for a failure message: why it answered what it did."""
    log = (stack.logs / "nginx-error.log").read_bytes()[offset:].decode(errors="replace")
    return [line for line in log.splitlines() if "[error]" in line or "[warn]" in line][-15:]


def test_sigkill_of_a_worker_mid_load_loses_no_get(stack: StackInfo, post_ids: list[int]) -> None:
    master = stack.pid("app")
    assert wait_for(lambda: len(children(master)) == WORKERS, 30)
    log_offset = _error_log_size(stack)
    with Load(stack.port("nginx"), _paths(post_ids), threads=12, max_seconds=LOAD_SECONDS) as load:
        assert load.wait_for_answers(BEFORE, PATIENCE), load.result
        # The busiest worker under this load (most keep-alive connections from Nginx now: requests
        # keep coming to it). Chosen before the load, it could be one whose idle connections the
        # keep-alive timeout had closed, which a stopped worker never accepts again (the other
        # worker accepts every new one), and nothing would ever queue at it.
        victim = max(children(master), key=lambda pid: len(_connections(pid, stack.port("app"))))
        assert _connections(victim, stack.port("app")), "no worker holds a connection from Nginx"
        # Its live gauges (pool states, sampled from the request path) are on disk.
        live = f"gauge_live*_{victim}.db"
        assert wait_for(lambda: any((stack.root / "prometheus").glob(live)), PATIENCE), "victim wrote no live gauge"
        # Stop it first so requests pile up on its keep-alive connections, then kill it with
        # those requests in flight: each must be replayed on another worker by Nginx.
        os.kill(victim, signal.SIGSTOP)
        # Nginx reuses its most recently returned upstream connection first, so with answers this
        # fast the load alone may cycle through the other worker's connections only. A burst of
        # concurrent uncached requests needs more connections than those: some are the victim's.
        # (Within gunicorn's 30 s heartbeat timeout, after which its master kills a silent worker.)
        with ThreadPoolExecutor(BURST) as pool:
            burst = [pool.submit(request, stack.port("nginx"), "/healthz", timeout=PATIENCE) for _ in range(BURST)]
            assert wait_for(lambda: requests_queued_at(victim, stack.port("app")) > 0, 20), "none sent to it"
            os.kill(victim, signal.SIGKILL)
            assert wait_for(lambda: victim not in children(master) and len(children(master)) == WORKERS, PATIENCE)
            assert load.wait_for_answers(AFTER, PATIENCE), load.result
            # The burst's requests stuck at the victim were replayed on another worker too.
            assert [future.result().status for future in burst] == [200] * BURST
    result = load.result
    assert not result.errors and set(result.statuses) == {200}, (
        result.statuses,
        result.errors,
        result.failures[:10],
        _nginx_errors(stack, log_offset),
    )
    # The kill did cut requests off mid-flight (so the retry path was exercised, not dodged).
    assert _upstream_failures(stack, log_offset), "no upstream request was cut off by the kill"
    # gunicorn's child_exit dropped the dead worker's live gauges from the metrics files.
    assert not list((stack.root / "prometheus").glob(live))


def test_hup_reload_under_load_drops_nothing(stack: StackInfo, post_ids: list[int]) -> None:
    master = stack.pid("app")
    assert wait_for(lambda: len(children(master)) == WORKERS, 30)
    before = set(children(master))
    log_offset = _error_log_size(stack)
    with Load(stack.port("nginx"), _paths(post_ids), threads=12, max_seconds=LOAD_SECONDS) as load:
        assert load.wait_for_answers(BEFORE, PATIENCE), load.result
        os.kill(master, signal.SIGHUP)
        # New workers up, every old one retired (graceful: it finishes what it holds)...
        assert wait_for(lambda: not before & set(children(master)) and len(children(master)) == WORKERS, PATIENCE)
        # ...and answering: only new workers are left.
        assert load.wait_for_answers(AFTER, PATIENCE), load.result
    result = load.result
    assert not result.errors and set(result.statuses) == {200}, (
        result.statuses,
        result.errors,
        result.failures[:10],
        _nginx_errors(stack, log_offset),
    )
    assert os.getpgid(master) == master  # same master: a reload, not a restart


def test_an_acknowledged_write_waits_for_its_wal_flush(stack: StackInfo) -> None:
    """The stack's PostgreSQL answers a COMMIT once its WAL is on disk (fsync and
    synchronous_commit on, PostgreSQL's defaults): a PostgreSQL crash loses no write the API
    acknowledged. With synchronous_commit off, the last ~0.6 s of them would go with it."""
    import psycopg

    url = stack.env["DATABASE_URL"].replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url, connect_timeout=10) as conn:
        settings = dict(
            conn.execute("SELECT name, setting FROM pg_settings WHERE name IN ('fsync', 'synchronous_commit')")
        )
    assert settings == {"fsync": "on", "synchronous_commit": "on"}
