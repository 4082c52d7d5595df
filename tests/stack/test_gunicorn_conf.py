"""gunicorn.conf.py: PostgreSQL waits are gevent-cooperative on one worker (with a control that
shows what a blocking wait looks like), --preload is refused, pools are sized from the greenlet
count, and pools inherited across fork are dropped."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import runpy
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from app import create_app
from app.extensions import db, page_cache
from devstack.servers import free_port
from devstack.stack import children, end_session
from tests.stack.conftest import REPO, StackInfo, request, wait_for

pytestmark = pytest.mark.slow  # stands up real servers (gunicorn, Nginx, PostgreSQL, Redis)

GUNICORN = str(Path(sys.executable).parent / "gunicorn")
CONF = str(REPO / "gunicorn.conf.py")
SLOW_APP = "tests.stack.slow_app:app"


@contextlib.contextmanager
def serve(
    stack: StackInfo, argv: list[str], log: Path, env: Mapping[str, str] | None = None
) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """One gunicorn on a free port against the stack's PostgreSQL and Redis; stopped afterwards."""
    port = free_port()
    full_env = {**stack.env, "WEB_CONCURRENCY": "1", "GUNICORN_BIND": f"127.0.0.1:{port}", **(env or {})}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [GUNICORN, *argv, "--bind", f"127.0.0.1:{port}"],
            cwd=REPO,
            env=full_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        up = wait_for(lambda: proc.poll() is not None or _ok(port), 30)
        assert up and proc.poll() is None, log.read_text()
        yield port, proc
    finally:
        end_session(proc)


def _ok(port: int) -> bool:
    try:
        return request(port, "/healthz", timeout=1).status == 200
    except OSError:
        return False


def concurrent_sleeps(port: int, count: int, seconds: float, plain: bool = False) -> tuple[float, list[int]]:
    """``count`` simultaneous requests that each sleep ``seconds`` in PostgreSQL; (wall time, statuses).
    `plain`: on a plain psycopg connection, through psycopg's own wait function (the app's
    connections wait on gevent's hub by themselves, app/deadline.py)."""
    barrier = threading.Barrier(count)
    statuses: list[int] = []

    def one() -> None:
        barrier.wait()
        path = "/_test/pg_sleep_plain" if plain else "/_test/pg_sleep"
        statuses.append(request(port, f"{path}?s={seconds}", timeout=30).status)

    threads = [threading.Thread(target=one) for _ in range(count)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return time.monotonic() - started, statuses


def test_slow_queries_overlap_on_one_gevent_worker(stack: StackInfo, tmp_path: Path) -> None:
    log = tmp_path / "gunicorn.log"
    with serve(stack, ["-c", CONF, SLOW_APP], log) as (port, proc):
        assert len(children(proc.pid)) == 1  # ONE worker
        # Cold pool: the ten connections are opened concurrently too (psycopg's connect wait).
        wall, statuses = concurrent_sleeps(port, 10, 0.5)
    assert statuses == [200] * 10
    assert wall < 1.2, f"10 x pg_sleep(0.5) took {wall:.2f} s on one worker: the waits did not overlap"
    assert "psycopg wait=wait_poll" in log.read_text()


BOOT = 15.0  # s a reload's new workers take to load the app (under gunicorn's 30 s boot timeout)


def test_a_reload_keeps_the_old_workers_answering_until_the_new_ones_are_ready(
    stack: StackInfo, tmp_path: Path
) -> None:
    """HUP, and the new workers take BOOT s to load the app (as on a busy machine): the old ones
    keep accepting meanwhile, then their replacements retire them. gunicorn alone stops the old
    ones at once, and for BOOT s nobody accepts (the 503s of issue 12's HUP test)."""
    delay = tmp_path / "boot-delay"
    env = {"WEB_CONCURRENCY": "2", "SLOW_APP_BOOT_DELAY_FILE": str(delay)}
    with serve(stack, ["-c", CONF, SLOW_APP], tmp_path / "gunicorn.log", env) as (port, proc):
        assert wait_for(lambda: len(children(proc.pid)) == 2, 30)
        old = set(children(proc.pid))
        delay.write_text(str(BOOT))
        os.kill(proc.pid, signal.SIGHUP)
        started = time.monotonic()
        answered = 0
        while time.monotonic() - started < BOOT / 2:  # the new workers are loading the app
            assert request(port, "/healthz", timeout=BOOT / 3).status == 200  # a new connection each
            answered += 1
        assert answered and old <= set(children(proc.pid)), "the old workers did not keep serving"
        # Once ready, each new worker retires an old one, and the worker count is back to 2.
        assert wait_for(lambda: not old & set(children(proc.pid)) and len(children(proc.pid)) == 2, BOOT + 60)
        assert request(port, "/healthz", timeout=10).status == 200
    assert "Worker failed to boot" not in (tmp_path / "gunicorn.log").read_text()


def test_a_blocking_c_wait_is_switched_to_the_cooperative_one(stack: StackInfo, tmp_path: Path) -> None:
    """PSYCOPG_WAIT_FUNC=wait_c stands for psycopg having picked its C wait (imported before the patch)."""
    log = tmp_path / "gunicorn.log"
    with serve(stack, ["-c", CONF, SLOW_APP], log, {"PSYCOPG_WAIT_FUNC": "wait_c"}) as (port, _):
        wall, statuses = concurrent_sleeps(port, 10, 0.5, plain=True)
        app_wall, app_statuses = concurrent_sleeps(port, 10, 0.5)  # the app's connections, on the hub
    assert statuses == [200] * 10 and app_statuses == [200] * 10
    assert wall < 1.2, f"{wall:.2f} s"
    assert app_wall < 1.2, f"{app_wall:.2f} s"
    text_ = log.read_text()
    assert "switching to wait_poll" in text_ and "psycopg wait=wait_poll" in text_


def test_control_the_c_wait_serializes_a_gevent_worker(stack: StackInfo, tmp_path: Path) -> None:
    """Without gunicorn.conf.py's guard the same requests run one after another: the overlap
    measured above is the guard's doing, and the measurement can tell the difference."""
    log = tmp_path / "gunicorn.log"
    bare_conf = tmp_path / "bare.conf.py"  # without -c, gunicorn would read ./gunicorn.conf.py
    bare_conf.write_text("")
    argv = ["-c", str(bare_conf), "-k", "gevent", "-w", "1", "--no-control-socket", SLOW_APP]
    # Serialized, the last request waits for the others' sleeps: past the database deadline
    # (app/deadline.py) that would be a 503; this measures the serialization, so no deadline.
    with serve(stack, argv, log, {"PSYCOPG_WAIT_FUNC": "wait_c", "DB_DEADLINE_MS": "0"}) as (port, _):
        wall, statuses = concurrent_sleeps(port, 4, 0.5, plain=True)
    assert statuses == [200] * 4
    assert wall >= 1.9, f"4 x pg_sleep(0.5) took only {wall:.2f} s with the C wait"


def test_the_loaded_heap_is_frozen_out_of_full_collections(stack: StackInfo, tmp_path: Path) -> None:
    """A worker's full collections examine only what it allocated after the boot, not the
    ~126k objects of the loaded app (their collection stalled every greenlet 59-100 ms)."""
    with serve(stack, ["-c", CONF, SLOW_APP], tmp_path / "gunicorn.log") as (port, _):
        response = request(port, "/_test/gc", timeout=10)
        state = json.loads(response.body)
    assert state["frozen"] > 50_000, state
    assert state["tracked"] < state["frozen"] / 4, state


def keep_alive_counts(port: int, path: str, clients: int, seconds: float) -> list[int]:
    """Requests each of `clients` keep-alive connections got answered in `seconds`, each
    sending its next request the moment it has the whole answer (as wrk does, or a proxy's
    pooled connection): an asyncio client on one thread, so no client-side lock decides who
    goes next."""
    import asyncio

    request_bytes = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()

    class Client(asyncio.Protocol):
        def __init__(self) -> None:
            self.buffer, self.count = b"", 0

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport: asyncio.Transport = transport  # type: ignore[assignment]
            self.transport.write(request_bytes)

        def data_received(self, data: bytes) -> None:
            self.buffer += data
            while b"\r\n\r\n" in self.buffer:
                head, _, rest = self.buffer.partition(b"\r\n\r\n")
                length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
                if len(rest) < length:
                    return
                assert head.startswith(b"HTTP/1.1 200"), head[:100]
                self.buffer, self.count = rest[length:], self.count + 1
                self.transport.write(request_bytes)

    async def run() -> list[int]:
        loop = asyncio.get_running_loop()
        made = [await loop.create_connection(Client, "127.0.0.1", port) for _ in range(clients)]
        await asyncio.sleep(seconds)
        for transport, _ in made:
            transport.close()
        return [protocol.count for _, protocol in made]

    return asyncio.run(run())


def test_keep_alive_connections_are_served_in_turn(stack: StackInfo, tmp_path: Path) -> None:
    """A client that sends its next request as soon as it has the answer does not keep the
    worker to itself: every connection gets its share (gunicorn.conf.py: post_request)."""
    with serve(stack, ["-c", CONF, SLOW_APP], tmp_path / "gunicorn.log") as (port, _):
        request(port, "/api/v1/feed?limit=5")  # cached: the cheapest answer, a near hit
        counts = keep_alive_counts(port, "/api/v1/feed?limit=5", 16, 4.0)
    counts.sort()
    assert counts[-1] > 50, counts  # the measurement ran
    assert counts[0] >= counts[-1] / 5, f"requests per connection {counts}: some connections starved"


def test_preload_is_refused(stack: StackInfo) -> None:
    port = free_port()
    res = subprocess.run(
        [GUNICORN, "-c", CONF, "--preload", "--bind", f"127.0.0.1:{port}", SLOW_APP],
        cwd=REPO,
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode != 0
    assert "--preload is refused" in res.stdout + res.stderr


def _pool_sizes(env: Mapping[str, str]) -> dict[str, int]:
    """The pool sizes app/config.py derives for ``env`` (in a fresh interpreter, as a worker would)."""
    code = (
        "import json; from app.config import load_settings; "
        "s = load_settings({'SQLALCHEMY_DATABASE_URI': 'postgresql://x/y', 'SECRET_KEY': 'k'}); "
        "o = s['SQLALCHEMY_ENGINE_OPTIONS']; "
        "print(json.dumps({'CACHE_POOL_SIZE': s['CACHE_POOL_SIZE'], 'DB_POOL_SIZE': o['pool_size'], "
        "'DB_MAX_OVERFLOW': o['max_overflow']}))"
    )
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "CACHE_", "WEB_", "GUNICORN_"))}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env={**base, **env}, capture_output=True, text=True, check=True
    ).stdout
    sizes: dict[str, int] = json.loads(out)
    return sizes


def test_pools_are_sized_against_the_greenlets_and_never_overflow() -> None:
    env = {"WEB_CONCURRENCY": "2", "GUNICORN_WORKER_CONNECTIONS": "150", "DB_CONNECTION_BUDGET": "80"}
    # Redis: a connection per greenlet. PostgreSQL: 80 / (2 workers x 2 for the HUP overlap) = 20,
    # all kept (no overflow: a connection opened past the pool would be closed again, churn).
    assert _pool_sizes(env) == {"CACHE_POOL_SIZE": 150, "DB_POOL_SIZE": 20, "DB_MAX_OVERFLOW": 0}
    few_greenlets = _pool_sizes({**env, "GUNICORN_WORKER_CONNECTIONS": "8"})
    assert few_greenlets == {"CACHE_POOL_SIZE": 8, "DB_POOL_SIZE": 8, "DB_MAX_OVERFLOW": 0}
    explicit = _pool_sizes({**env, "DB_POOL_SIZE": "3", "CACHE_POOL_SIZE": "7"})
    assert explicit["DB_POOL_SIZE"] == 3 and explicit["CACHE_POOL_SIZE"] == 7


@pytest.fixture
def conf() -> Iterator[dict[str, Any]]:
    """gunicorn.conf.py's namespace, without leaking anything it puts in the environment."""
    saved = dict(os.environ)
    try:
        yield runpy.run_path(CONF)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_pools_inherited_across_fork_are_dropped(stack: StackInfo, conf: dict[str, Any]) -> None:
    app = create_app(
        {
            "SQLALCHEMY_DATABASE_URI": stack.state["database_url"],
            "SECRET_KEY": "x" * 32,
            "REDIS_URL": stack.state["redis_url"],
        }
    )
    backend = "SELECT pg_backend_pid()"
    with app.app_context():
        before = db.session.execute(text(backend)).scalar()
        db.session.remove()
        store = page_cache.store
        pool = store.client.connection_pool  # type: ignore[attr-defined]
        assert store.ping()
        assert pool._connections  # the "parent" holds a Redis connection
    conf["dispose_inherited"](app, logging.getLogger("test"))
    with app.app_context():
        assert not pool._connections
        after = db.session.execute(text(backend)).scalar()
        db.session.remove()
        assert after != before  # a new connection: the inherited one was forgotten
        db.engine.dispose()
    conf["dispose_inherited"](object(), logging.getLogger("test"))  # no app state: nothing to do


def _boot_with_prelude(stack: StackInfo, tmp_path: Path, prelude: str) -> subprocess.CompletedProcess[str]:
    """gunicorn.conf.py run after ``prelude`` (what a careless import in the master would do)."""
    conf = tmp_path / "wrapped.conf.py"
    conf.write_text(f"{prelude}\nexec(compile(open({CONF!r}).read(), {CONF!r}, 'exec'))\n")
    return subprocess.run(
        [GUNICORN, "-c", str(conf), "--bind", f"127.0.0.1:{free_port()}", SLOW_APP],
        cwd=REPO,
        env={**stack.env, "WEB_CONCURRENCY": "1"},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_psycopg_imported_in_the_master_is_refused(stack: StackInfo, tmp_path: Path) -> None:
    res = _boot_with_prelude(stack, tmp_path, "import psycopg")
    assert res.returncode != 0
    assert "imported in the master" in res.stdout + res.stderr


def test_a_module_holding_the_unpatched_ssl_context_fails_the_worker_boot(stack: StackInfo, tmp_path: Path) -> None:
    """A library that did `from ssl import SSLContext` before gevent patched keeps the blocking
    class; gevent warns about it, and the worker refuses to boot instead of serving with it."""
    prelude = (
        "import sys, types\nfrom ssl import SSLContext\n"
        "early = types.ModuleType('early_ssl_user')\nearly.SSLContext = SSLContext\nsys.modules['early_ssl_user'] = early"
    )
    res = _boot_with_prelude(stack, tmp_path, prelude)
    output = res.stdout + res.stderr
    assert res.returncode != 0, output[-2000:]
    assert "gevent patched too late" in output and "early_ssl_user" in output
