"""Throwaway PostgreSQL and Redis servers on 127.0.0.1 for tests and the local stack (stdlib only).

Started servers are stopped by stop(), by leaving their ``with`` block, and at interpreter exit
(atexit; an otherwise unhandled SIGTERM is turned into a normal exit). If this process is killed
outright, Redis dies with the thread that started it (PR_SET_PDEATHSIG) and a watchdog shell stops
PostgreSQL (pg_ctl detaches the postmaster). As root, PostgreSQL runs as the ``postgres`` system
user and the ancestors of ``base_dir`` get o+x (search only) so that user can reach it.

``detached=True`` opts out of all of that: the server runs in a session of its own and outlives
this process (the daemonized local stack, devstack/stack.py, stops it by its pid).
"""

from __future__ import annotations

import abc
import argparse
import atexit
import contextlib
import ctypes
import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

HOST = "127.0.0.1"
PG_TEST_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    "shared_buffers": "256MB",
}
_live: set[_Server] = set()


@contextlib.contextmanager
def traversable_tmpdir(prefix: str) -> Iterator[Path]:
    """A scratch dir under /tmp that other users can traverse (PostgreSQL runs as `postgres`,
    Nginx workers as `nobody`). Not under pytest's basetemp: every pytest session that starts
    on this machine resets /tmp/pytest-of-<user> to 0700, cutting those servers off mid-run."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o711)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def find_pg_bindir() -> Path:
    """Where initdb/pg_ctl live: highest /usr/lib/postgresql/*/bin, else ``pg_config --bindir``, else PATH."""
    version = lambda p: tuple(int(x) for x in p.parent.name.split(".") if x.isdigit())  # noqa: E731
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True)
    if shutil.which("pg_config"):
        candidates.append(
            Path(subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True).stdout.strip())
        )
    candidates.append(Path(shutil.which("initdb") or "/nonexistent").parent)
    for d in candidates:
        if (d / "initdb").exists() and (d / "pg_ctl").exists():
            return d
    raise FileNotFoundError("PostgreSQL server binaries not found; run scripts/ensure-servers.sh")


@atexit.register
def _stop_all() -> None:
    for server in list(_live):
        try:
            server.stop()
        except Exception as exc:  # keep stopping the others
            print(f"devstack: could not stop {server!r}: {exc}", file=sys.stderr)


def _log_tail(path: Path, lines: int = 20) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


class _Server(abc.ABC):
    """Shared lifecycle: atexit tracking, context manager, restart."""

    @abc.abstractmethod
    def _launch(self) -> None: ...

    @abc.abstractmethod
    def stop(self) -> None: ...

    def _track(self) -> None:
        _live.add(self)
        if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))

    def restart(self) -> None:
        """Stop, then start again on the same port (PostgreSQL keeps its data; Redis comes back empty)."""
        self.stop()
        self._launch()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass(eq=False)
class Postgres(_Server):
    """A private cluster: ``base_dir``/data, ``base_dir``/socket and ``base_dir``/postgres.log."""

    base_dir: Path
    port: int
    settings: dict[str, str] = field(default_factory=lambda: dict(PG_TEST_SETTINGS))
    bindir: Path = field(default_factory=find_pg_bindir)
    detached: bool = False
    _watchdog: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @classmethod
    def start(
        cls, base_dir: Path, port: int | None = None, settings: dict[str, str] | None = None, *, detached: bool = False
    ) -> Postgres:
        """initdb (unless ``base_dir`` already holds a cluster) and start; returns once it accepts connections.

        ``detached``: no watchdog and no atexit stop; the server outlives this process.
        """
        pg = cls(
            Path(base_dir).resolve(),
            port or free_port(),
            dict(PG_TEST_SETTINGS if settings is None else settings),
            detached=detached,
        )
        pg._launch()
        return pg

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @property
    def socket_dir(self) -> Path:
        return self.base_dir / "socket"

    @property
    def url(self) -> str:
        return self.url_for("postgres")

    def url_for(self, dbname: str) -> str:
        return f"postgresql://postgres@{HOST}:{self.port}/{dbname}"

    def _argv(self, *cmd: object) -> list[str]:
        """Command line for a PostgreSQL binary, run as the postgres user when we are root."""
        argv = [str(self.bindir / str(cmd[0])), *map(str, cmd[1:])]
        return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv

    def _run(self, *cmd: object) -> str:
        """Run a PostgreSQL binary; its stdout, or RuntimeError with its output."""
        argv = self._argv(*cmd)
        self._grant_traversal()
        res = subprocess.run(argv, cwd=self.base_dir, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if res.returncode:
            raise RuntimeError(f"{shlex.join(argv)} failed ({res.returncode}):\n{res.stdout}{res.stderr}")
        return res.stdout

    def _prepare_dirs(self) -> None:
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0:
            return
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            subprocess.run(["useradd", "--system", "--user-group", "--no-create-home", "postgres"], check=True)
            pw = pwd.getpwnam("postgres")
        for d in (self.base_dir, self.socket_dir):
            os.chown(d, pw.pw_uid, pw.pw_gid)
        self._grant_traversal()

    def _grant_traversal(self) -> None:
        """As root, let the postgres user reach base_dir: every parent gets o+x. Checked before each
        command, not once: any pytest session starting on the machine (ours, or another user's
        as root) resets /tmp/pytest-of-root to 0700, and pg_ctl stop/start then fail."""
        if os.geteuid() != 0:
            return
        for parent in self.base_dir.parents:
            if not (mode := parent.stat().st_mode) & 0o001:
                parent.chmod(mode | 0o001)

    def _launch(self) -> None:
        self._prepare_dirs()
        if not (self.data_dir / "PG_VERSION").exists():
            flags = "-U postgres -E UTF8 --locale=C.UTF-8 --auth=trust --no-sync --no-instructions"
            self._run("initdb", "-D", self.data_dir, *flags.split())
        opts = {"listen_addresses": HOST, "port": self.port, "unix_socket_directories": self.socket_dir}
        opts.update(self.settings)
        postgres_args = " ".join(f"-c {k}={shlex.quote(str(v))}" for k, v in opts.items())
        log = self.base_dir / "postgres.log"
        try:
            self._run("pg_ctl", "start", "-w", "-t", "60", "-D", self.data_dir, "-l", log, "-o", postgres_args)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}\n--- {log}:\n{_log_tail(log)}") from None
        if self.detached:
            return
        self._track()
        # pg_ctl detaches the postmaster, so a watchdog stops it once its stdin pipe hits EOF: when we die.
        stop = self._argv("pg_ctl", "stop", "-m", "fast", "-D", self.data_dir)
        script = 'cat >/dev/null; exec "$@" >/dev/null 2>&1'
        self._watchdog = subprocess.Popen(
            ["sh", "-c", script, "devstack-pg-watchdog", *stop], stdin=subprocess.PIPE, start_new_session=True
        )

    def pid(self) -> int | None:
        """The postmaster's pid (from postmaster.pid), or None when the cluster is not running."""
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def is_running(self) -> bool:
        return (pid := self.pid()) is not None and Path(f"/proc/{pid}").exists()

    def stop(self) -> None:
        """Fast shutdown, keeping the data dir; SIGKILL the postmaster's process group if that fails."""
        _live.discard(self)
        if self._watchdog is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._watchdog.pid, signal.SIGKILL)  # sh and its cat
            self._watchdog.communicate()  # reap it and close our end of the pipe
            self._watchdog = None
        if not self.is_running():
            return
        try:
            self._run("pg_ctl", "stop", "-w", "-t", "30", "-m", "fast", "-D", self.data_dir)
        except RuntimeError:
            if (pid := self.pid()) is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)  # pg_ctl makes the postmaster a session leader

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        """Run SQL over the unix socket; returns unaligned, tuples-only output."""
        conn = ("-h", self.socket_dir, "-p", self.port, "-U", "postgres", "-d", dbname)
        return self._run("psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", *conn, "-c", sql)

    def create_database(self, name: str) -> str:
        """CREATE DATABASE ``name``; returns its URL."""
        self._run("createdb", "-h", self.socket_dir, "-p", self.port, "-U", "postgres", name)
        return self.url_for(name)

    @classmethod
    def replica_of(
        cls,
        primary: Postgres,
        base_dir: Path,
        port: int | None = None,
        slot: str = "replica_1",
        settings: dict[str, str] | None = None,
        *,
        detached: bool = False,
    ) -> Postgres:
        """A hot standby of ``primary`` streaming through the physical replication slot ``slot``.

        ``base_dir`` is emptied, filled by ``pg_basebackup -R`` (standby.signal and primary_conninfo
        written for us; the slot dropped first if a previous replica left it) and started; returns
        once it accepts connections. ``primary`` must allow replication connections over its socket
        (initdb's trust defaults do) and run with wal_level replica (the default).
        """
        replica = cls(
            Path(base_dir).resolve(),
            port or free_port(),
            dict(PG_TEST_SETTINGS if settings is None else settings),
            bindir=primary.bindir,
            detached=detached,
        )
        if replica.is_running():
            raise RuntimeError(f"a server is still running in {replica.data_dir}")
        shutil.rmtree(replica.data_dir, ignore_errors=True)
        replica._prepare_dirs()
        primary.psql(f"SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '{slot}'")
        conn = ("-h", primary.socket_dir, "-p", primary.port, "-U", "postgres")
        replica._run(
            "pg_basebackup",
            *conn,
            "-D",
            replica.data_dir,
            "-R",
            "-X",
            "stream",
            "-c",
            "fast",
            "-C",
            "-S",
            slot,
            "--no-sync",
        )
        replica._launch()
        return replica

    def is_in_recovery(self) -> bool:
        """True on a standby (replaying WAL), False on a primary."""
        return self.psql("SELECT pg_is_in_recovery()").strip() == "t"


def _die_with_parent() -> None:
    """preexec_fn: own process group, and SIGKILL when the parent thread dies (Linux PR_SET_PDEATHSIG)."""
    os.setpgrp()
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)


@dataclass(eq=False)
class Redis(_Server):
    """A redis-server subprocess without persistence; ``config`` adds or overrides ``--name value`` options."""

    base_dir: Path
    port: int
    config: dict[str, str] = field(default_factory=dict)
    detached: bool = False
    proc: subprocess.Popen[bytes] = field(init=False, repr=False)

    @classmethod
    def start(
        cls, base_dir: Path, port: int | None = None, config: dict[str, str] | None = None, *, detached: bool = False
    ) -> Redis:
        """Start redis-server; returns once it answers PING.

        ``detached``: its own session, no parent-death signal and no atexit stop; it outlives
        this process (stop it by ``proc.pid``).
        """
        redis = cls(Path(base_dir).resolve(), port or free_port(), dict(config or {}), detached=detached)
        redis._launch()
        return redis

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    log_name = "redis.log"

    def _argv(self) -> list[str]:
        opts = {"port": self.port, "bind": HOST, "save": "", "appendonly": "no", "daemonize": "no"}
        opts.update({"dir": self.base_dir, **self.config})
        argv = [shutil.which("redis-server") or "/usr/bin/redis-server"]
        return argv + [arg for k, v in opts.items() for arg in (f"--{k}", str(v))]

    def _launch(self, timeout: float = 10.0) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        argv = self._argv()
        log = self.base_dir / self.log_name
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                cwd=self.base_dir,
                start_new_session=self.detached,
                preexec_fn=None if self.detached else _die_with_parent,
            )
        if not self.detached:
            self._track()
        deadline = time.monotonic() + timeout
        while not self.ping():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{argv[0]} did not come up on port {self.port}:\n{_log_tail(log)}")
            time.sleep(0.01)

    def ping(self, timeout: float = 0.5) -> bool:
        """True if the server answers a raw PING with +PONG within ``timeout``."""
        try:
            with socket.create_connection((HOST, self.port), timeout=timeout) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def is_running(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (after SIGCONT, in case it is paused), then SIGKILL if it has not exited within ``timeout``."""
        _live.discard(self)
        if not self.is_running():
            return
        self.resume()
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def pause(self) -> None:
        """SIGSTOP: connections are still accepted by the kernel but never answered (a hung cache)."""
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)


@dataclass(eq=False)
class Sentinel(Redis):
    """A Redis Sentinel (``redis-server sentinel.conf --sentinel``: the same binary, so Debian's
    separate redis-sentinel package is not needed) watching one primary.

    ``config`` holds the monitored set: ``{"master": name, "host": ..., "port": ...,
    "quorum": ..., "down-after-milliseconds": ..., "failover-timeout": ...}``. Sentinel rewrites
    its file as it learns (replicas, other Sentinels, a failover), so it is written afresh at
    every launch: a restarted Sentinel starts from the configured primary, not its memory.
    """

    log_name = "sentinel.log"

    @property
    def conf_file(self) -> Path:
        return self.base_dir / "sentinel.conf"

    def _argv(self) -> list[str]:
        c = self.config
        name = c["master"]
        lines = [
            f"port {self.port}",
            f"bind {HOST}",
            f"dir {self.base_dir}",
            "daemonize no",
            f"sentinel monitor {name} {c['host']} {c['port']} {c['quorum']}",
            f"sentinel down-after-milliseconds {name} {c['down-after-milliseconds']}",
            f"sentinel failover-timeout {name} {c['failover-timeout']}",
            f"sentinel parallel-syncs {name} 1",
        ]
        self.conf_file.write_text("\n".join(lines) + "\n")
        return [shutil.which("redis-server") or "/usr/bin/redis-server", str(self.conf_file), "--sentinel"]


@contextlib.contextmanager
def throwaway_postgres(prefix: str = "readwire-pg-") -> Iterator[Postgres]:
    """A throwaway cluster in a traversable_tmpdir of its own, stopped and removed afterwards."""
    with traversable_tmpdir(prefix) as base:
        server = Postgres.start(base / "pg")
        try:
            yield server
        finally:
            server.stop()


@contextlib.contextmanager
def _timed(label: str) -> Iterator[None]:
    t0 = time.monotonic()
    yield
    print(f"{label}: {time.monotonic() - t0:.3f}s")


def _check() -> None:
    """Start, query and stop each server in a temp dir, printing timings."""
    with tempfile.TemporaryDirectory(prefix="devstack-check-") as tmp:
        with _timed("postgres initdb+start"):
            pg = Postgres.start(Path(tmp) / "pg")
        with _timed("postgres psql select 1"):
            if pg.psql("select 1").strip() != "1":
                raise SystemExit("postgres: unexpected answer to select 1")
        with _timed("postgres stop"):
            pg.stop()
        with _timed("redis start"):
            redis = Redis.start(Path(tmp) / "redis")
        with _timed("redis ping"):
            if not redis.ping():
                raise SystemExit("redis: no PONG")
        with _timed("redis stop"):
            redis.stop()
        if pg.is_running() or redis.is_running():
            raise SystemExit("a server is still running after stop()")
    print(f"OK (postgres from {pg.bindir})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m devstack.servers", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["check"], help="start, query and stop both servers in a temp dir")
    parser.parse_args()
    _check()
