"""The serving stack for end-to-end tests: started once per run through the real CLI
(`python -m devstack.stack up`) on free ports with a small dataset, stopped at the end, and
checked to have left no process behind."""

from __future__ import annotations

import collections
import gzip
import http.client
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from devstack.servers import free_port, traversable_tmpdir
from devstack.stack import alive, group_members, wait_until

REPO = Path(__file__).resolve().parents[2]
STACK_POSTS = 300
WORKERS = 3  # several workers: killing one must leave others to take the retried requests
OUTBOX_SWEEP = 1.0
POPULAR_INTERVAL = 10


@dataclass
class Response:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        raw = gzip.decompress(self.body) if self.headers.get("Content-Encoding") == "gzip" else self.body
        return json.loads(raw)


def request(
    port: int,
    path: str,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    body: Any = None,
    source: str | None = None,
    timeout: float = 10.0,
) -> Response:
    """One HTTP/1.1 request to 127.0.0.1:``port`` (``source``: the client's loopback address)."""
    conn = http.client.HTTPConnection(
        "127.0.0.1", port, timeout=timeout, source_address=(source, 0) if source else None
    )
    try:
        data = None if body is None else json.dumps(body).encode()
        hdrs = dict(headers or {})
        if data is not None:
            hdrs.setdefault("Content-Type", "application/json")
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        return Response(resp.status, resp.headers, resp.read())
    finally:
        conn.close()


@dataclass
class StackInfo:
    root: Path
    state: dict[str, Any]
    up_stdout: str

    def port(self, service: str) -> int:
        return int(self.state["services"][service]["port"])

    def pid(self, service: str) -> int:
        return int(self.state["services"][service]["pid"])

    @property
    def env(self) -> dict[str, str]:
        """Environment for `flask --app app ...` against this stack."""
        keep = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "SECRET_KEY"}}
        return {**keep, **self.state["env"]}

    @property
    def logs(self) -> Path:
        return Path(self.state["paths"]["logs"])


def _stack_env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "SECRET_KEY"}}
    env.update(
        {
            "POSTGRES_PORT": str(free_port()),
            "REDIS_PORT": str(free_port()),
            "APP_PORT": str(free_port()),
            "NGINX_PORT": str(free_port()),
            "STACK_POSTS": str(STACK_POSTS),
            "WEB_CONCURRENCY": str(WORKERS),
            "NGINX_WORKER_PROCESSES": "2",
            "ACCESS_LOG": "json",  # the request-id test reads it
            "OUTBOX_SWEEP_INTERVAL": str(OUTBOX_SWEEP),
            # /popular snapshots every 10 s, each built 5 s ahead (tests/stack/test_popular.py).
            "POPULAR_INTERVAL": str(POPULAR_INTERVAL),
            "POPULAR_BUILD_AHEAD": "5",
        }
    )
    return env


def _stack_cli(command: str, root: Path, env: Mapping[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "devstack.stack", command, "--dir", str(root)],
        cwd=REPO,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def live_processes_mentioning(text: str) -> list[str]:
    """`ps` lines (not zombies) whose command line mentions ``text``."""
    out = subprocess.run(["ps", "-eo", "pid=,stat=,args="], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if text in line and not line.split()[1].startswith("Z")]


@pytest.fixture(scope="session")
def stack() -> Iterator[StackInfo]:
    with traversable_tmpdir("readwire-stack-") as root:
        yield from _run_stack(root)


def _run_stack(root: Path) -> Iterator[StackInfo]:
    env = _stack_env(root)
    up = _stack_cli("up", root, env, timeout=240)
    try:
        assert up.returncode == 0, f"stack up failed:\n{up.stdout}\n{up.stderr}"
        state = json.loads((root / "state.json").read_text())
        yield StackInfo(root, state, up.stdout)
    finally:
        state = json.loads((root / "state.json").read_text()) if (root / "state.json").exists() else {}
        down = _stack_cli("down", root, env, timeout=120)
        assert down.returncode == 0, f"stack down failed:\n{down.stdout}\n{down.stderr}"
        left = [
            (name, pid)
            for name, info in state.get("services", {}).items()
            for pid in [info["pid"], *group_members(info["pid"])]
            if alive(pid)
        ]
        assert not left, f"processes left after stack down: {left}"
        assert not live_processes_mentioning(str(root)), live_processes_mentioning(str(root))


@pytest.fixture(scope="session")
def post_ids(stack: StackInfo) -> list[int]:
    body = request(stack.port("app"), "/api/v1/feed?limit=100").json()
    return [item["id"] for item in body["data"]]


@dataclass
class LoadResult:
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    failures: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.statuses.values()) + sum(self.errors.values())


class Load:
    """Client threads sending GETs over keep-alive connections until stopped (bounded by
    ``max_seconds``), recording every status and every transport error. ``rate``: requests per
    second across all threads at a steady pace (each thread on its own schedule), else as fast
    as the threads go."""

    def __init__(
        self, port: int, paths: Sequence[str], threads: int = 8, max_seconds: float = 60.0, rate: float | None = None
    ) -> None:
        self.port = port
        self.paths = list(paths)
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]
        self.interval = len(self.threads) / rate if rate else 0.0
        self.deadline = time.monotonic() + max_seconds
        self.stopping = threading.Event()
        self.result = LoadResult()
        self._lock = threading.Lock()
        self._answered = threading.Condition(self._lock)  # notified on every status or error

    def _run(self, offset: int) -> None:
        conn: http.client.HTTPConnection | None = None
        i = offset
        next_at = time.monotonic() + self.interval * offset / len(self.threads)
        while not self.stopping.is_set() and time.monotonic() < self.deadline:
            if self.interval:
                self.stopping.wait(max(0.0, next_at - time.monotonic()))
                next_at += self.interval
            path = self.paths[i % len(self.paths)]
            i += len(self.threads)
            try:
                conn = conn or http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                conn.request("GET", path)
                resp = conn.getresponse()
                body = resp.read()
                with self._answered:
                    self.result.statuses[resp.status] += 1
                    if resp.status != 200:  # what answered it and why: the problem's detail, the edge's cache
                        where = f"X-Cache-Status={resp.getheader('X-Cache-Status')} X-App-Cache={resp.getheader('X-App-Cache')}"
                        self.result.failures.append(f"{resp.status} {path} {where} {body[:300]!r}")
                    self._answered.notify_all()
                if resp.will_close:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as exc:
                with self._answered:
                    self.result.errors[type(exc).__name__] += 1
                    self.result.failures.append(f"{type(exc).__name__} {path}")
                    self._answered.notify_all()
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()

    def wait_for_answers(self, count: int, timeout: float) -> bool:
        """Wait until ``count`` more requests than now have come back (an answer or a transport
        error): progress, whatever the machine's speed, instead of a request total in a time."""
        with self._answered:
            target = self.result.total + count
            return self._answered.wait_for(lambda: self.result.total >= target, timeout)

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        for t in self.threads:
            t.join(timeout=40)


wait_for = wait_until  # poll a condition until it holds or the timeout passes (devstack's helper)


def at_second_start() -> None:
    """Sleep until just after a wall-clock second boundary (Nginx keeps cache times in seconds)."""
    time.sleep(1 - time.time() % 1 + 0.005)


EDITOR_PASSWORD = "stack-test-password-0123"


def create_editor(stack: StackInfo) -> str:
    """A new editor account on the stack (`flask create-editor`); returns its username."""
    username = f"editor{uuid.uuid4().hex[:8]}"
    res = subprocess.run(
        [str(Path(sys.executable).parent / "flask"), "--app", "app", "create-editor", username],
        input=f"{EDITOR_PASSWORD}\n{EDITOR_PASSWORD}\n",
        cwd=REPO,
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    return username


def sign_in(stack: StackInfo, username: str) -> str:
    signed = request(
        stack.port("nginx"), "/api/v1/auth/token", "POST", body={"username": username, "password": EDITOR_PASSWORD}
    )
    assert signed.status == 200, signed.body
    access: str = signed.json()["access_token"]
    return access


@pytest.fixture(scope="session")
def editor_token(stack: StackInfo) -> str:
    """An editor's access token (valid 15 minutes: the stack tests take less)."""
    return sign_in(stack, create_editor(stack))
