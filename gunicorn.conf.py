"""Gunicorn settings for Readwire: gevent workers behind Nginx.

    gunicorn -c gunicorn.conf.py 'app:create_app()'

Every knob reads the environment (stack.env feeds both the local stack and compose); the reason
for each default sits next to it. What this file guarantees, per worker:

* gevent patches the standard library before psycopg, redis or the app are imported: the app
  is loaded in each worker after its patch (never ``--preload``, refused below), and a worker
  that finds them imported already, or that gevent warns about, fails to boot.
* psycopg 3 waits cooperatively. Since 3.1.14 it picks its pure-Python poll wait when gevent
  has patched ``select`` at import time; its C ``wait_c`` would block the whole worker. Should
  it have picked ``wait_c`` anyway (imported too early, or PSYCOPG_WAIT_FUNC), the worker
  switches it to ``wait_poll`` and says so.
* The pools are sized by app/config.py from the same variables (WEB_CONCURRENCY,
  GUNICORN_WORKER_CONNECTIONS, DB_CONNECTION_BUDGET); anything inherited across fork is disposed.
* A greenlet runs the app's outbox drain loop (app/cache/invalidation.py): rows left by a worker
  killed between its commit and its INCRs would otherwise wait until some worker fails a write.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import warnings
from datetime import timedelta
from typing import Any

from gunicorn.glogging import Logger


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name) or default)


def _env_float(name: str, default: float) -> float:
    return float(os.environ.get(name) or default)


# --- processes ---------------------------------------------------------------------------
bind = os.environ.get("GUNICORN_BIND") or "127.0.0.1:8000"
worker_class = "gevent"
# One gevent worker per usable core: a worker is one thread, CPU-bound on cache hits (routing,
# a Redis round trip, the response), so more workers than cores only adds context switches.
workers = _env_int("WEB_CONCURRENCY", len(os.sched_getaffinity(0)))
# Greenlets per worker. Past ~200 concurrent requests one core is already queueing >100 ms of
# work; further connections are better left in the listen backlog, where an idle worker (or
# Nginx's retry) takes them. app/config.py sizes the Redis and PostgreSQL pools from it.
# Plus the Server-Sent Events streams one worker may hold (SSE_MAX_STREAMS, app/config.py): an
# idle stream is a parked greenlet, and must not take one of the request slots the pools are
# sized for (app/config.py sizes them from GUNICORN_WORKER_CONNECTIONS alone).
worker_connections = _env_int("GUNICORN_WORKER_CONNECTIONS", 200) + _env_int("SSE_MAX_STREAMS", 1000)
# Longer than Nginx's upstream keepalive_timeout (4 s): the proxy, not gunicorn, closes idle
# keep-alive connections, so a request never races gunicorn's close on a reused connection. The
# gevent worker bounds the wait for every request head by it, the first one included: a client of
# this (internal) port that connects and sends nothing, or half a head, holds a greenlet this long
# at most (450 such connections held both workers for 75 s before, issue 12).
keepalive = _env_int("GUNICORN_KEEPALIVE", 5)
# A worker that blocks its hub this long (no heartbeat) is killed and replaced.
timeout = _env_int("GUNICORN_TIMEOUT", 30)
# On HUP/TERM a worker finishes what it holds: longer than Nginx's proxy_read_timeout (10 s), so
# an in-flight request always completes; short enough that an idle keep-alive connection holds a
# retiring worker at most this long.
graceful_timeout = _env_int("GUNICORN_GRACEFUL_TIMEOUT", 20)
# Off: no known leak to bound, and a restart empties the worker's pools. Set it with jitter.
max_requests = _env_int("GUNICORN_MAX_REQUESTS", 0)
max_requests_jitter = max_requests // 10
# Never preload with gevent: the app (psycopg, redis, ssl users) would be imported in the master
# before any monkey-patching, and its pools shared across fork. on_starting() refuses it.
preload_app = False
# X-Forwarded-* are trusted from these proxies only: the app's TRUSTED_PROXIES (stack.env; Nginx:
# loopback locally, its fixed address in docker-compose.yml) unless FORWARDED_ALLOW_IPS says otherwise.
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS") or os.environ.get("TRUSTED_PROXIES") or "127.0.0.1,::1"
proc_name = os.environ.get("GUNICORN_PROC_NAME") or "readwire"
pidfile = os.environ.get("GUNICORN_PIDFILE") or None
# gunicorn >= 25 opens a control socket at one fixed per-user path; several instances on one
# machine (the stack, benchmarks, tests) would fight over it. Off unless a path is given.
control_socket = os.environ.get("GUNICORN_CONTROL_SOCKET") or ""
control_socket_disable = not control_socket

# --- outbox drain ---------------------------------------------------------------------------
# Look at the in-process "pending" flag every second (free); sweep the outbox table anyway
# every OUTBOX_SWEEP_INTERVAL s (one indexed SELECT on an almost always empty table).
OUTBOX_TICK = _env_float("OUTBOX_DRAIN_INTERVAL", 1.0)
OUTBOX_SWEEP = _env_float("OUTBOX_SWEEP_INTERVAL", 5.0)


# --- logging ----------------------------------------------------------------------------------
class JsonAccessLogger(Logger):  # type: ignore[misc]
    """One JSON object per request on the access log (ACCESS_LOG=json); fields stay machine-parsable
    whatever the request line contains, which gunicorn's printf-style format cannot promise."""

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: timedelta) -> None:
        if not self.access_log_enabled:
            return
        status = resp.status.split(None, 1)[0] if isinstance(resp.status, str) else resp.status
        record = {
            "logger": "gunicorn.access",
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "request_id": environ.get("HTTP_X_REQUEST_ID"),
            "method": environ.get("REQUEST_METHOD"),
            "path": environ.get("PATH_INFO"),
            "query": environ.get("QUERY_STRING") or None,
            "status": int(status),
            "bytes": getattr(resp, "sent", None),
            "ms": round(request_time.total_seconds() * 1000, 3),
            "remote": environ.get("HTTP_X_REAL_IP") or environ.get("REMOTE_ADDR"),
            "pid": os.getpid(),
        }
        try:
            self.access_log.info(json.dumps(record, separators=(",", ":")))
        except Exception:  # a log line must never fail a request
            self.error("access log: could not write a record")


_access = (os.environ.get("ACCESS_LOG") or "off").lower()
if _access not in {"off", "json"}:
    raise RuntimeError(f"ACCESS_LOG must be off or json, not {_access!r}")
if _access == "json":
    accesslog = "-"
    logger_class = JsonAccessLogger
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOGLEVEL") or "info"

# --- gunicorn's own errors --------------------------------------------------------------------
# Requests gunicorn refuses before the app sees them (malformed request line or headers, header
# limits, chunk framing, an unsupported Transfer-Encoding) are answered as problem+json, like
# every other error (installed in each worker by post_worker_init). The detail never echoes the
# request: gunicorn's own message quotes what the client sent.
_GUNICORN_PROBLEMS = {
    400: ("bad_request", "Bad request", "The request is not valid HTTP/1.1 (request line, headers or body framing)."),
    403: ("forbidden", "Forbidden", "This request is not accepted from this peer."),
    414: ("uri_too_long", "URI too long", "The request line is longer than this server accepts."),
    417: ("bad_request", "Expectation failed", "This server does not meet the request's Expect header."),
    431: ("header_too_large", "Request header fields too large", "The request headers exceed this server's limits."),
    500: ("internal_error", "Internal server error", "The server failed to answer this request."),
    501: ("not_implemented", "Not implemented", "This server does not support the request's Transfer-Encoding."),
}


def problem_error_page(status: int, reason: str) -> bytes:
    """The whole HTTP response gunicorn sends for a request it refuses, as problem+json."""
    code, title, detail = _GUNICORN_PROBLEMS.get(
        status, ("internal_error" if status >= 500 else "bad_request", reason, reason)
    )
    body = json.dumps(
        {"type": f"/problems/{code}", "title": title, "status": status, "detail": detail, "code": code},
        separators=(",", ":"),
    ).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/problem+json\r\n"
        f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\n\r\n"
    )
    return head.encode("latin-1") + body


def write_problem(sock: Any, status: int, reason: str, message: str) -> None:
    """gunicorn.util.write_error's signature (see app/compat.gunicorn_error_writer)."""
    from gunicorn import util

    util.write_nonblock(sock, problem_error_page(status, reason))


# Modules that must be imported only after gevent has patched the worker.
_LATE_MODULES = ("psycopg", "redis", "sqlalchemy", "app")


def _imported_early() -> list[str]:
    return [name for name in _LATE_MODULES if name in sys.modules]


# --- hooks ------------------------------------------------------------------------------------
def on_starting(server: Any) -> None:
    """Master, before anything forks: refuse the configurations that break the gevent contract,
    and start the metrics directory afresh."""
    if server.cfg.preload_app:
        raise RuntimeError("gunicorn.conf.py: --preload is refused with gevent workers (see the module docstring)")
    if early := _imported_early():
        raise RuntimeError(f"gunicorn.conf.py: {early} imported in the master, before gevent can patch the workers")
    reset_metrics_dir()


def reset_metrics_dir() -> None:
    """prometheus_client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR, app/observability): the
    per-process files of a previous run must go before any worker starts (not on HUP: the
    running workers' counters live there)."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not path:
        return
    os.makedirs(path, exist_ok=True)
    for name in os.listdir(path):
        if name.endswith(".db"):
            os.remove(os.path.join(path, name))


def child_exit(server: Any, worker: Any) -> None:
    """Master: a worker is gone (exited or killed); drop its live gauges from the metrics, and
    count it out if it was retiring after a reload."""
    _retired(server, worker)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Imported here, in the master, only once a worker has exited. Workers forked later inherit
        # the module with unpatched locks; they guard in-memory updates that never yield to the hub.
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def post_fork(server: Any, worker: Any) -> None:
    """Worker, first thing after fork: patch now (gevent's own worker patch later is a no-op),
    turn gevent's "patched too late" warnings into a boot failure, drop inherited pools."""
    from gevent import monkey

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", monkey.MonkeyPatchWarning)
        monkey.patch_all()
    late = [str(w.message) for w in caught if issubclass(w.category, monkey.MonkeyPatchWarning)]
    if late:
        raise RuntimeError(f"gevent patched too late in worker {worker.pid}: {late}")
    dispose_inherited(getattr(worker.app, "callable", None), worker.log)
    if early := _imported_early():
        raise RuntimeError(f"{early} were imported before gevent patched worker {worker.pid}")


def dispose_inherited(wsgi_app: Any, log: Any) -> None:
    """Drop pooled connections a forked worker inherited (only possible with a preloaded app).

    ``dispose(close=False)`` is SQLAlchemy's after-fork recipe: forget the parent's connections
    without closing sockets the parent still uses. redis-py pools reset by pid, reset() forces it.
    """
    extensions = getattr(wsgi_app, "extensions", None)
    if not extensions:
        return
    sqlalchemy_ext = extensions.get("sqlalchemy")
    if sqlalchemy_ext is not None:
        with wsgi_app.app_context():
            for engine in sqlalchemy_ext.engines.values():
                engine.dispose(close=False)
    from app.extensions import page_cache

    client = getattr(page_cache.pages(wsgi_app).store, "client", None)
    if client is not None:
        client.connection_pool.reset()
    log.warning("disposed database and cache pools inherited across fork")


def ensure_cooperative_psycopg(log: Any) -> str:
    """Make psycopg's blocking waits go through gevent; returns the wait function's name."""
    from gevent import monkey

    if not (monkey.is_module_patched("select") and monkey.is_module_patched("socket")):
        raise RuntimeError("gevent has not patched select/socket: psycopg cannot wait cooperatively")
    if "psycopg" not in sys.modules:  # the app does not use PostgreSQL (embedded default, bare app)
        return "none"
    import selectors

    from psycopg import waiting

    if getattr(waiting, "wait_c", None) is not None and waiting.wait is waiting.wait_c:
        log.warning("psycopg chose its C wait (not gevent-cooperative): switching to wait_poll")
        waiting.wait = waiting.wait_poll
    # wait_conn (connection setup) uses a selector class bound when psycopg was imported.
    if waiting.DefaultSelector is not selectors.DefaultSelector:  # type: ignore[attr-defined]
        log.warning("psycopg bound an unpatched selector: switching to gevent's")
        waiting.DefaultSelector = selectors.DefaultSelector  # type: ignore[attr-defined]
    return str(getattr(waiting.wait, "__name__", waiting.wait))


# --- reloads (HUP) -----------------------------------------------------------------------
# gunicorn's reload forks the new workers and SIGTERMs the old ones at once. Until the new ones
# have loaded the app (seconds on a busy machine) nobody accepts: requests on new connections
# wait in the listen backlog past Nginx's proxy_read_timeout (503s under load, issue 12). So the
# old workers serve until their replacements are ready: on_reload raises the worker target by
# the old generation (gunicorn retires none of it), each new worker is assigned one old worker
# and, once it has loaded the app, stops that one gracefully (SIGTERM, what gunicorn sends);
# each old worker's exit lowers the target again (child_exit). One signal per old worker, to
# that worker: nothing is lost to signal coalescing.


def on_reload(server: Any) -> None:
    """Master, HUP (before the new workers are forked): the old generation, oldest first."""
    replaced = sorted(server.WORKERS.values(), key=lambda w: w.age)[-server.num_workers :]  # gunicorn stops any others
    server.readwire_to_retire = [w.pid for w in replaced]
    server.readwire_retiring = set(server.readwire_to_retire)
    server.num_workers += len(replaced)


def pre_fork(server: Any, worker: Any) -> None:
    """Master, before each fork: a worker forked for a reload is given an old one to retire."""
    if getattr(server, "readwire_to_retire", None):
        worker.retires = server.readwire_to_retire.pop(0)


def retire_old_worker(worker: Any) -> None:
    """Worker, ready: stop the old worker it replaces (if it is still this master's child)."""
    pid = getattr(worker, "retires", None)
    if pid is None:
        return
    try:
        with open(f"/proc/{pid}/stat") as stat:
            ppid = int(stat.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return  # gone already
    if ppid == worker.ppid:
        os.kill(pid, signal.SIGTERM)


def _retired(server: Any, worker: Any) -> None:
    """Master: an old worker of a reload is gone; the target is back one worker closer to `workers`."""
    retiring = getattr(server, "readwire_retiring", set())
    if worker.pid in retiring:
        retiring.discard(worker.pid)
        server.num_workers = max(server.cfg.workers, server.num_workers - 1)


def post_worker_init(worker: Any) -> None:
    """Worker, app loaded: check the wait path, answer gunicorn's own refusals as problem+json,
    start the background loops; then, if it replaces an old worker after a reload, retire it."""
    wait = ensure_cooperative_psycopg(worker.log)
    worker.log.info("worker %s: psycopg wait=%s", worker.pid, wait)
    from app.compat import gunicorn_error_writer, gunicorn_head_with_body

    gunicorn_error_writer(write_problem)
    gunicorn_head_with_body()  # a response is sent whole or not at all (Nginx replays the latter)
    start_background_loops(worker)
    freeze_loaded_heap()
    retire_old_worker(worker)


def post_request(worker: Any, req: Any, environ: Any, resp: Any) -> None:
    """Worker, after each request: yield to the hub before reading the connection's next one.
    A keep-alive client that sends its next request as soon as it has the answer (a poller, a
    proxy's pooled connection, wrk) finds its greenlet reading that request without ever
    waiting: gevent's recv returns at once when the bytes are there, so that connection was
    served again and again while the others' requests waited in their sockets. One worker,
    32 keep-alive clients, cached pages: p50 4-10 ms but p75 84-112 ms and p99 0.58-1.07 s."""
    from gevent import sleep

    sleep(0)


def freeze_loaded_heap() -> None:
    """Worker, app loaded: move what the boot allocated (modules, the app, SQLAlchemy's metadata
    and statements: ~126k objects) to the collector's permanent generation, after one last
    collection so no garbage is kept. A full collection examined all of it every time: 59 ms
    in-process (tests/stack/test_gunicorn_conf.py), 86-100 ms stalls seen in a worker under the
    streamers scenario (issue 13), every greenlet of the worker waiting; frozen, it is ~0 ms.
    The heap the boot built lives as long as the worker, so nothing frozen is ever garbage."""
    import gc

    gc.collect()
    gc.freeze()


def start_background_loops(worker: Any) -> None:
    """The outbox drain, the idempotency-key sweep and the /popular builder greenlets."""
    app = worker.wsgi
    extensions = getattr(app, "extensions", None)
    if extensions is None:  # not a Flask app
        return
    from app.extensions import invalidation

    if invalidation.key in extensions:  # the Readwire app (not a bare benchmark app)
        import gevent

        drain = invalidation.invalidator(app).drain_forever
        worker.outbox_drain = gevent.spawn(drain, app, OUTBOX_TICK, OUTBOX_SWEEP)
        from app.extensions import push

        state = push.state(app)
        # Events older than SSE_RETENTION: one DELETE an hour per worker.
        worker.events_prune = gevent.spawn(state.hub.prune_forever, app.config["SSE_RETENTION"], 3600.0)
        websub = state.websub
        if websub.enabled:  # WebSub announcements (app/push/websub.py): woken by each commit, swept each tick
            worker.websub_drain = gevent.spawn(websub.drain_forever, app, OUTBOX_SWEEP)
        from app.services.idempotency import sweep_forever

        worker.key_sweep = gevent.spawn(sweep_forever, app, float(app.config["IDEMPOTENCY_SWEEP_INTERVAL"]))
        if app.config["POPULAR_BUILD_AHEAD"]:
            from app.services.popular import build_ahead_forever

            worker.popular_builder = gevent.spawn(build_ahead_forever, app)


def worker_exit(server: Any, worker: Any) -> None:
    for name in ("outbox_drain", "websub_drain", "events_prune", "key_sweep", "popular_builder"):
        loop = getattr(worker, name, None)
        if loop is not None:
            loop.kill(block=False)
