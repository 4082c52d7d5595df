"""The serving stack on this machine without Docker: PostgreSQL, Redis, gunicorn and Nginx.

    python -m devstack.stack up|down|status|env [--dir .stack]   (or STACK_DIR=...)

``up`` starts every server detached from this process (it returns; the servers stay), applies
the migrations, seeds STACK_POSTS posts once (``--if-empty``) and writes ``<dir>/state.json``
(pids, ports, URLs, DATABASE_URL, REDIS_URL, SECRET_KEY; mode 0600) for load tests and
benchmarks, then prints one ``name  url`` line per service. ``down`` stops them all and checks
that no process of theirs is left. ``env`` prints ``export`` lines (DATABASE_URL, REDIS_URL,
SECRET_KEY) that point the app's CLI at the running stack:
``eval "$(.venv/bin/python -m devstack.stack env)"``. Configuration: stack.env, overridden by the environment,
the same file docker-compose.yml reads.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from devstack.servers import HOST, Postgres, Redis

REPO = Path(__file__).resolve().parent.parent
ENV_FILE = REPO / "stack.env"
NGINX_TEMPLATE = REPO / "nginx.conf"
GUNICORN_CONF = REPO / "gunicorn.conf.py"
DEFAULT_DIR = REPO / ".stack"
VENV_BIN = Path(sys.executable).parent
SERVICES = ("postgres", "redis", "app", "nginx")
STATE_VERSION = 1
_PLACEHOLDER = re.compile(r"\$\{(NGINX_[A-Z0-9_]*)\}")
# A write the API acknowledged is on disk (fsync and synchronous_commit at PostgreSQL's defaults,
# on): with synchronous_commit off, a PostgreSQL crash loses the last ~0.6 s of acknowledged
# writes. A WAL flush costs ~60 us on this machine's disk (pg_test_fsync, 2026-12-02).
PG_SETTINGS = {"shared_buffers": "256MB"}
# Pages expire, generation counters must not: evict only keys that carry a TTL.
REDIS_CONFIG = {"maxmemory": "512mb", "maxmemory-policy": "volatile-lru"}


class StackError(RuntimeError):
    """A service did not come up (the message carries its log tail)."""


def say(message: str) -> None:
    """Progress goes to stderr: stdout carries only the service lines."""
    print(f"stack: {message}", file=sys.stderr, flush=True)


# --- configuration --------------------------------------------------------------------------------
def read_env_file(path: Path = ENV_FILE) -> dict[str, str]:
    """KEY=VALUE lines, ``#`` comments and blank lines skipped; no quoting or expansion (as compose)."""
    values: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not re.fullmatch(r"[A-Z_][A-Z0-9_]*", key.strip()):
            raise ValueError(f"{path}:{number}: not a KEY=VALUE line: {raw!r}")
        values[key.strip()] = value.strip()
    return values


def stack_settings(environ: Mapping[str, str] | None = None, env_file: Path = ENV_FILE) -> dict[str, str]:
    """stack.env with each of its keys overridden by the environment when set there."""
    environ = os.environ if environ is None else environ
    settings = read_env_file(env_file)
    return {key: environ.get(key) or value for key, value in settings.items()}


def render_nginx(values: Mapping[str, str], template: str | None = None) -> str:
    """nginx.conf with its ``${NGINX_*}`` placeholders filled in (what envsubst does in compose)."""
    text = NGINX_TEMPLATE.read_text() if template is None else template
    missing = sorted({name for name in _PLACEHOLDER.findall(text) if name not in values})
    if missing:
        raise KeyError(f"nginx.conf placeholders without a value: {', '.join(missing)}")
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], text)


def nginx_placeholders(template: str | None = None) -> set[str]:
    return set(_PLACEHOLDER.findall(NGINX_TEMPLATE.read_text() if template is None else template))


def upstream_servers(addresses: Sequence[str], settings: Mapping[str, str]) -> str:
    """The ``server`` lines of nginx.conf's upstream (``${NGINX_UPSTREAM_SERVERS}``).

    One address (one gunicorn socket): listed twice with max_fails=0. Nginx never retries the
    peer that just failed, so the second entry is what lets proxy_next_upstream replay an
    idempotent request a dying worker dropped (another worker of the same socket accepts it),
    and max_fails=0 keeps one killed worker from marking the only socket down.
    Several addresses (app nodes, each its own gunicorn master): each once, with passive health
    checks: NGINX_MAX_FAILS failed attempts within NGINX_FAIL_TIMEOUT take a node out for
    NGINX_FAIL_TIMEOUT, then one request probes it again.
    """
    if not addresses:
        raise ValueError("an upstream needs at least one address")
    if len(addresses) == 1:
        return f"server {addresses[0]} max_fails=0;\n        server {addresses[0]} max_fails=0;"
    fails, timeout = settings.get("NGINX_MAX_FAILS") or "3", settings.get("NGINX_FAIL_TIMEOUT") or "5s"
    return "\n        ".join(f"server {a} max_fails={fails} fail_timeout={timeout};" for a in addresses)


def nginx_values(
    settings: Mapping[str, str],
    state_dir: Path,
    static_dir: Path,
    log_dir: Path,
    upstreams: Sequence[str] | None = None,
) -> dict[str, str]:
    """The template's values for a local Nginx in front of local gunicorn(s): ``upstreams``
    (host:port of each app node), else NGINX_UPSTREAM, else the stack's APP_PORT."""
    access = settings.get("NGINX_ACCESS_LOG") or f"{log_dir / 'nginx-access.log'} readwire buffer=64k flush=1s"
    if not upstreams:
        upstreams = [settings.get("NGINX_UPSTREAM") or f"{HOST}:{settings['APP_PORT']}"]
    return {
        "NGINX_WORKER_PROCESSES": settings.get("NGINX_WORKER_PROCESSES", "auto"),
        "NGINX_LISTEN": f"{HOST}:{settings['NGINX_PORT']}",
        "NGINX_UPSTREAM_SERVERS": upstream_servers(upstreams, settings),
        "NGINX_STATE_DIR": str(state_dir),
        "NGINX_STATIC_DIR": str(static_dir),
        "NGINX_ERROR_LOG": str(log_dir / "nginx-error.log"),
        "NGINX_ACCESS_LOG": access,
        "NGINX_RATE": settings["NGINX_RATE"],
        "NGINX_BURST": settings["NGINX_BURST"],
        "NGINX_RATE_EXEMPT": settings["NGINX_RATE_EXEMPT"],
        "NGINX_WORKER_CONNECTIONS": settings["NGINX_WORKER_CONNECTIONS"],
        "NGINX_WORKER_RLIMIT_NOFILE": settings["NGINX_WORKER_RLIMIT_NOFILE"],
        "NGINX_CLIENT_TIMEOUT": settings["NGINX_CLIENT_TIMEOUT"],
        "NGINX_CONN_PER_CLIENT": settings["NGINX_CONN_PER_CLIENT"],
    }


# --- processes ------------------------------------------------------------------------------------
def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, pgrp) of a live process, None if it is gone (or a zombie)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    state, ppid, pgrp = fields[0], int(fields[1]), int(fields[2])
    return None if state in {"Z", "X"} else (state, ppid, pgrp)


def alive(pid: int | None) -> bool:
    return pid is not None and _proc_stat(pid) is not None


def children(pid: int) -> list[int]:
    """Live direct children of ``pid`` (gunicorn's workers, Nginx's workers)."""
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _proc_stat(int(entry.name))) and stat[1] == pid:
            kids.append(int(entry.name))
    return sorted(kids)


def group_members(pgid: int) -> list[int]:
    """Live processes in process group ``pgid``."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _proc_stat(int(entry.name))) and stat[2] == pgid:
            members.append(int(entry.name))
    return sorted(members)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def end_session(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """SIGTERM the process group of a child started with ``start_new_session``, reap it, and
    SIGKILL the group if it outlives ``timeout``."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def stop_group(pid: int, marker: str, first: signal.Signals, timeout: float) -> None:
    """Signal a session leader we started (``first``), wait for its whole group, SIGKILL leftovers.

    ``marker`` must appear in the leader's command line: a recycled pid is never signalled.
    """
    if not alive(pid) and not group_members(pid):
        return
    if alive(pid) and marker not in _cmdline(pid):
        say(f"pid {pid} is no longer {marker}; not touching it")
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, first)
    if wait_until(lambda: not group_members(pid), timeout):
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    wait_until(lambda: not group_members(pid), 5.0)


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


def _port_free(port: int) -> bool:
    """Nobody listens on ``port`` (SO_REUSEADDR: TIME_WAIT leftovers do not count, as for the servers)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
        return True


def _http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.HTTPError):
        return False


def _tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else "(no log)"


def _spawn(argv: list[str], log: Path, env: Mapping[str, str], cwd: Path = REPO) -> subprocess.Popen[bytes]:
    """Start a server in a session of its own (it outlives us; its pid is its process group)."""
    with log.open("ab") as out:
        return subprocess.Popen(
            argv, cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
        )


def _run(argv: list[str], env: Mapping[str, str], what: str) -> None:
    res = subprocess.run(argv, cwd=REPO, env=dict(env), capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if res.returncode:
        raise StackError(f"{what} failed ({res.returncode}):\n{res.stdout}{res.stderr}")


def migrate_and_seed(app_env: Mapping[str, str], posts: str) -> float:
    """``flask db upgrade`` then ``flask seed --if-empty`` against app_env's DATABASE_URL; seconds taken."""
    flask = [str(VENV_BIN / "flask"), "--app", "app"]
    t0 = time.monotonic()
    _run([*flask, "db", "upgrade"], app_env, "flask db upgrade")
    _run([*flask, "seed", "--posts", posts, "--if-empty", "--no-progress"], app_env, "flask seed")
    return time.monotonic() - t0


def start_gunicorn(port: int, env: Mapping[str, str], log: Path, proc_name: str, metrics_dir: Path) -> int:
    """One gunicorn master (gunicorn.conf.py, the app) on ``port`` in a session of its own;
    returns its pid once /readyz answers 200 (StackError with the log tail otherwise)."""
    env = {
        **env,
        "GUNICORN_BIND": f"{HOST}:{port}",
        "GUNICORN_PROC_NAME": proc_name,
        # Several workers: /metrics sums their per-process files (gunicorn.conf.py empties it).
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
    }
    argv = [str(VENV_BIN / "gunicorn"), "-c", str(GUNICORN_CONF), "app:create_app()"]
    proc = _spawn(argv, log, env)
    url = f"http://{HOST}:{port}"
    ready = wait_until(lambda: proc.poll() is not None or _http_ok(url + "/readyz"), 60)
    if not ready or proc.poll() is not None:
        stop_group(proc.pid, "gunicorn", signal.SIGTERM, 10)
        raise StackError(f"gunicorn did not get ready on {url} (exit {proc.poll()}):\n{_tail(log)}")
    say(f"gunicorn up on {port} (workers {children(proc.pid)})")
    return proc.pid


def start_nginx(values: Mapping[str, str], nginx_dir: Path, log_dir: Path, port: int) -> int:
    """Render nginx.conf with ``values`` into ``nginx_dir``, check it, start Nginx in a session of
    its own; returns the master's pid once /healthz answers through it."""
    conf = nginx_dir / "nginx.conf"
    conf.write_text(render_nginx(values))
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    base = [nginx, "-p", str(nginx_dir), "-c", str(conf)]
    _run([*base, "-t", "-q"], os.environ, "nginx -t")
    log = log_dir / "nginx.log"
    proc = _spawn([*base, "-g", "daemon off;"], log, os.environ)
    url = f"http://{HOST}:{port}"
    ready = wait_until(lambda: proc.poll() is not None or _http_ok(url + "/healthz"), 30)
    if not ready or proc.poll() is not None:
        stop_group(proc.pid, "nginx", signal.SIGQUIT, 10)
        error_log = _tail(log_dir / "nginx-error.log")
        raise StackError(f"nginx did not answer on {url} (exit {proc.poll()}):\n{_tail(log)}\n{error_log}")
    say(f"nginx up on {port}")
    return proc.pid


def check_ports_free(ports: Mapping[str, int]) -> None:
    busy = [f"{name} {port}" for name, port in ports.items() if not _port_free(port)]
    if busy:
        raise StackError(f"ports in use on {HOST}: {', '.join(busy)} (set the *_PORT(S) keys in the environment)")


def leftovers(services: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """``name pid N`` for every process of the services (leaders and their groups) still alive."""
    return [
        f"{name} pid {pid}"
        for name, info in services.items()
        for pid in sorted({*([info["pid"]] if alive(info.get("pid")) else []), *group_members(info.get("pid") or -1)})
    ]


# --- state ----------------------------------------------------------------------------------------
class StateDir:
    """A directory of detached servers: data, logs, Nginx's files and ``state.json`` (mode 0600)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.state_file = self.root / "state.json"
        self.logs = self.root / "logs"
        self.nginx_dir = self.root / "nginx"
        self.static_dir = self.root / "static"

    def read_state(self) -> dict[str, Any] | None:
        try:
            state: dict[str, Any] = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return None
        return state

    def write_state(self, state: dict[str, Any]) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        tmp.chmod(0o600)  # it carries SECRET_KEY
        tmp.replace(self.state_file)

    def _prepare_dirs(self) -> None:
        for d in (self.root, self.logs, self.nginx_dir, self.static_dir):
            d.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:  # Nginx workers run as nobody: they must reach the cache and static dirs
            for parent in [self.root, *self.root.parents]:
                if not (mode := parent.stat().st_mode) & 0o001:
                    parent.chmod(mode | 0o001)

    def _secret(self, environ: Mapping[str, str]) -> str:
        if environ.get("SECRET_KEY"):
            return environ["SECRET_KEY"]
        path = self.root / "secret_key"
        if not path.exists():
            path.write_text(secrets.token_urlsafe(48))
            path.chmod(0o600)
        return path.read_text().strip()


class Stack(StateDir):
    """One stack rooted at ``root`` (default .stack/): its files, its state, up/down/status."""

    def __init__(self, root: Path = DEFAULT_DIR) -> None:
        super().__init__(root)

    def running(self, state: dict[str, Any]) -> dict[str, bool]:
        services = state.get("services", {})
        return {name: alive(services.get(name, {}).get("pid")) for name in SERVICES}

    # --- up -------------------------------------------------------------------------------------
    def up(self, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
        """Start whatever is not running and return the state (already up: just the state)."""
        environ = dict(os.environ if environ is None else environ)
        state = self.read_state()
        if state and all(self.running(state).values()):
            say(f"already up ({self.state_file})")
            return state
        if state:
            say("a previous stack is partly running: stopping it first")
            self.down()
        settings = stack_settings(environ)
        self._prepare_dirs()
        _run(["bash", str(REPO / "scripts" / "ensure-servers.sh")], environ, "scripts/ensure-servers.sh")
        ports = {name: int(settings[f"{name.upper()}_PORT"]) for name in ("postgres", "redis", "app", "nginx")}
        check_ports_free(ports)
        state = {"version": STATE_VERSION, "dir": str(self.root), "started_at": time.time(), "services": {}}
        try:
            self._up(state, settings, ports, environ)
        except BaseException:
            self.write_state(state)
            say("start failed: stopping what was started")
            self.down()
            raise
        return state

    def _up(
        self, state: dict[str, Any], settings: dict[str, str], ports: dict[str, int], environ: dict[str, str]
    ) -> None:
        services = state["services"]
        t0 = time.monotonic()
        pg_settings = {**PG_SETTINGS, "max_connections": settings.get("POSTGRES_MAX_CONNECTIONS", "200")}
        pg = Postgres.start(self.root / "postgres", port=ports["postgres"], settings=pg_settings, detached=True)
        dbname = settings.get("POSTGRES_DB", "readwire")
        if not pg.psql(f"SELECT 1 FROM pg_database WHERE datname = '{dbname}'").strip():
            pg.create_database(dbname)
        services["postgres"] = {"url": pg.url_for(dbname), "port": pg.port, "pid": pg.pid()}
        self.write_state(state)
        say(f"postgres up on {pg.port} ({time.monotonic() - t0:.1f} s)")

        redis = Redis.start(self.root / "redis", port=ports["redis"], config=REDIS_CONFIG, detached=True)
        services["redis"] = {"url": redis.url, "port": redis.port, "pid": redis.proc.pid}
        self.write_state(state)
        say(f"redis up on {redis.port}")

        app_env = {
            **environ,
            **settings,
            "DATABASE_URL": services["postgres"]["url"],
            "REDIS_URL": redis.url,
            "SECRET_KEY": self._secret(environ),
            "PYTHONUNBUFFERED": "1",
        }
        state["env"] = {key: app_env[key] for key in ("DATABASE_URL", "REDIS_URL", "SECRET_KEY")}
        state["database_url"], state["redis_url"] = app_env["DATABASE_URL"], app_env["REDIS_URL"]
        posts = settings.get("STACK_POSTS", "100000")
        took = migrate_and_seed(app_env, posts)
        say(f"migrated and seeded ({posts} posts if it was empty; {took:.1f} s)")

        self._start_app(state, app_env, ports["app"])
        self._start_nginx(state, settings, ports["nginx"])
        state["app_url"], state["nginx_url"] = services["app"]["url"], services["nginx"]["url"]
        state["settings"] = settings
        state["paths"] = {
            "logs": str(self.logs),
            "nginx_conf": str(self.nginx_dir / "nginx.conf"),
            "static_dir": str(self.static_dir),
        }
        self.write_state(state)
        say(f"up in {time.monotonic() - t0:.1f} s; state in {self.state_file}")

    def _start_app(self, state: dict[str, Any], app_env: dict[str, str], port: int) -> None:
        log = self.logs / "gunicorn.log"
        pid = start_gunicorn(port, app_env, log, f"readwire-stack-{port}", self.root / "prometheus")
        state["services"]["app"] = {"url": f"http://{HOST}:{port}", "port": port, "pid": pid}
        self.write_state(state)

    def _start_nginx(self, state: dict[str, Any], settings: dict[str, str], port: int) -> None:
        values = nginx_values({**settings, "NGINX_PORT": str(port)}, self.nginx_dir, self.static_dir, self.logs)
        pid = start_nginx(values, self.nginx_dir, self.logs, port)
        state["services"]["nginx"] = {"url": f"http://{HOST}:{port}", "port": port, "pid": pid}
        self.write_state(state)

    # --- faults (tests, the chaos load test) ------------------------------------------------------------
    def restart_redis(self) -> int:
        """Start the stack's Redis again on its port after it died (a new, empty server, as after a
        crash without persistence); the state records the new pid. Returns it."""
        state = self.read_state()
        if state is None:
            raise StackError("no stack state")
        info = state["services"]["redis"]
        if alive(info.get("pid")):
            raise StackError(f"redis pid {info['pid']} is still running")
        redis = Redis.start(self.root / "redis", port=int(info["port"]), config=REDIS_CONFIG, detached=True)
        info["pid"] = redis.proc.pid
        self.write_state(state)
        return int(redis.proc.pid)

    def restart_postgres(self) -> int:
        """Stop the stack's PostgreSQL (fast: open transactions roll back) and start it again on its
        port with its data; the state records the new postmaster pid. Returns it."""
        state = self.read_state()
        if state is None:
            raise StackError("no stack state")
        info = state["services"]["postgres"]
        pg = Postgres(self.root / "postgres", int(info["port"]), detached=True)
        pg.stop()
        settings = state.get("settings", {})
        pg_settings = {**PG_SETTINGS, "max_connections": settings.get("POSTGRES_MAX_CONNECTIONS", "200")}
        pg = Postgres.start(self.root / "postgres", port=int(info["port"]), settings=pg_settings, detached=True)
        info["pid"] = pg.pid()
        self.write_state(state)
        return int(info["pid"])

    # --- down / status ------------------------------------------------------------------------------
    def down(self) -> list[str]:
        """Stop every service of the state; returns leftovers (empty when all are gone)."""
        state = self.read_state()
        if not state:
            return []
        services = state.get("services", {})
        graceful = float(state.get("settings", {}).get("GUNICORN_GRACEFUL_TIMEOUT") or 20)
        if pid := services.get("nginx", {}).get("pid"):
            stop_group(pid, "nginx", signal.SIGQUIT, 10)
        if pid := services.get("app", {}).get("pid"):
            stop_group(pid, "gunicorn", signal.SIGTERM, graceful + 5)
        if pid := services.get("redis", {}).get("pid"):
            stop_group(pid, "redis-server", signal.SIGTERM, 10)
        if "postgres" in services:
            Postgres(self.root / "postgres", int(services["postgres"]["port"]), detached=True).stop()
        # A stopped server's processes can take a moment to be gone on a busy machine (the postmaster
        # exits after pg_ctl saw its pid file go): wait for them before calling any a leftover.
        wait_until(lambda: not leftovers(services), 15)
        left = leftovers(services)
        if not left:
            self.state_file.unlink(missing_ok=True)
        return left

    def lines(self, state: dict[str, Any]) -> Iterator[str]:
        for name in SERVICES:
            if name in state.get("services", {}):
                yield f"{name}  {state['services'][name]['url']}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.stack", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["up", "down", "status", "env"])
    parser.add_argument(
        "--dir",
        type=Path,
        default=Path(os.environ.get("STACK_DIR") or DEFAULT_DIR),
        help="state, data and logs (default: $STACK_DIR, else .stack/)",
    )
    args = parser.parse_args(argv)
    stack = Stack(args.dir)
    if args.command == "up":
        try:
            state = stack.up()
        except StackError as exc:
            print(f"stack: {exc}", file=sys.stderr)
            return 1
        print("\n".join(stack.lines(state)))
        return 0
    if args.command == "down":
        left = stack.down()
        if left:
            print(f"stack: still running: {', '.join(left)}", file=sys.stderr)
            return 1
        say("down: no process left")
        return 0
    current = stack.read_state()
    if not current:
        print("stack: not running", file=sys.stderr)
        return 3
    if args.command == "env":  # for eval in a shell: the app's CLI then talks to this stack
        for key, value in current["env"].items():
            print(f"export {key}={shlex.quote(value)}")
        return 0
    running = stack.running(current)
    for name in SERVICES:
        url = current.get("services", {}).get(name, {}).get("url", "-")
        print(f"{name}  {url}  {'running' if running[name] else 'STOPPED'}")
    return 0 if all(running.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
