"""Slow and idle clients cannot starve the edge or the app: Nginx's slots are sized with its
file limit and its header/body timeouts are tight, a client has a bounded number of requests in
progress, and gunicorn's (internal) port lets a half-sent request hold a greenlet 5 s at most."""

from __future__ import annotations

import contextlib
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack.stack import children, wait_until
from tests.stack.conftest import WORKERS, StackInfo, request

pytestmark = pytest.mark.slow  # stands up real servers (gunicorn, Nginx, PostgreSQL, Redis)

PARTIAL = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: "  # a request head that never ends


def _conf(stack: StackInfo) -> str:
    return Path(stack.state["paths"]["nginx_conf"]).read_text()


def _directive(conf: str, name: str) -> str:
    match = re.search(rf"^\s*{name}\s+([^;]+);", conf, re.MULTILINE)
    assert match, name
    return match.group(1).strip()


def _seconds(value: str) -> float:
    return float(value[:-1]) if value.endswith("s") else float(value)


@contextlib.contextmanager
def half_sent(port: int, count: int, source: str = "127.0.0.1") -> Iterator[list[socket.socket]]:
    """`count` connections that each sent half a request head, held open."""
    held: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind((source, 0))
            sock.settimeout(10)
            sock.connect(("127.0.0.1", port))
            sock.sendall(PARTIAL)
            held.append(sock)
        yield held
    finally:
        for sock in held:
            sock.close()


def _open(sock: socket.socket) -> bool:
    """Whether the server still keeps this connection (no FIN, no reset, no answer)."""
    sock.setblocking(False)
    try:
        return not sock.recv(1)  # b"" = closed; data would be an answer
    except BlockingIOError:
        return True
    except OSError:
        return False


def _unread_at_server(port: int, clients: list[socket.socket]) -> int:
    """Bytes the server on ``port`` has not read yet from these client connections (its side's
    receive queues, from /proc/net/tcp): 0 once it has taken in everything they sent."""
    peers = {sock.getsockname() for sock in clients}
    unread = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, queues = fields[1], fields[2], fields[4]
        address, remote_port = remote.split(":")
        peer = (socket.inet_ntoa(bytes.fromhex(address)[::-1]), int(remote_port, 16))
        if int(local.split(":")[1], 16) == port and peer in peers:
            unread += int(queues.split(":")[1], 16)
    return unread


def _probe(port: int, timeout: float) -> float:
    """Seconds until GET /healthz answered 200."""
    started = time.monotonic()
    response = request(port, "/healthz", timeout=timeout)
    assert response.status == 200, response.body
    return time.monotonic() - started


def test_nginx_workers_have_the_file_limit_their_slots_need(stack: StackInfo) -> None:
    conf = _conf(stack)
    slots = int(_directive(conf, "worker_connections"))
    assert int(_directive(conf, "worker_rlimit_nofile")) >= 2 * slots
    workers = children(stack.pid("nginx"))
    assert workers
    for pid in workers:
        limits = Path(f"/proc/{pid}/limits").read_text()
        soft = int(re.search(r"^Max open files\s+(\d+)", limits, re.MULTILINE).group(1))  # type: ignore[union-attr]
        assert soft >= 2 * slots, (pid, soft, slots)
    assert _seconds(_directive(conf, "client_header_timeout")) <= 5
    assert _seconds(_directive(conf, "client_body_timeout")) <= 5


HEADER_TIMEOUT = 5.0  # the bound this test holds Nginx to (NGINX_CLIENT_TIMEOUT)
GUNICORN_HEAD_BOUND = 5.0  # ... and gunicorn (GUNICORN_KEEPALIVE)


def test_nine_thousand_half_sent_heads_do_not_starve_nginx(stack: StackInfo) -> None:
    port = stack.port("nginx")
    started = time.monotonic()
    with half_sent(port, 9000) as held:
        waits = [_probe(port, timeout=10) for _ in range(20)]
        assert max(waits) < 3.0, waits  # answered at once, not queued behind the idle ones
        # ...and every half-sent head is cut off within the header timeout (slack for a busy machine).
        time.sleep(max(0.0, HEADER_TIMEOUT + 3 - (time.monotonic() - started)))
        still_open = sum(_open(sock) for sock in held)
        assert still_open == 0, f"{still_open} of {len(held)} half-sent heads kept past {HEADER_TIMEOUT:g} s (+3 s)"


def test_a_client_has_a_bounded_number_of_requests_in_progress(stack: StackInfo) -> None:
    """Slow uploads from one address (not the exempt load generators): past the limit, 429."""
    port = stack.port("nginx")
    limit = int(_directive(_conf(stack), "limit_conn perclient"))
    head = (
        b"POST /api/v1/auth/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 50\r\n\r\n{"
    )
    held: list[socket.socket] = []
    try:
        for _ in range(limit):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=("127.0.0.2", 0))
            sock.sendall(head)  # the body never completes: the request stays in progress
            held.append(sock)
        # Nginx has read every one of them (each is past its head: limit_conn counts from there).
        assert wait_until(lambda: _unread_at_server(port, held) == 0, 30), _unread_at_server(port, held)
        extra = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=("127.0.0.2", 0))
        held.append(extra)
        extra.sendall(head)
        answer = extra.recv(65536)
        assert answer.startswith(b"HTTP/1.1 429"), answer[:200]
        assert b"application/problem+json" in answer and b"Retry-After: 1" in answer
        # Another client is not affected.
        assert request(port, "/api/v1/categories", source="127.0.0.9").status == 200
    finally:
        for sock in held:
            sock.close()


def test_half_sent_heads_hold_gunicorn_greenlets_only_briefly(stack: StackInfo) -> None:
    """More half-sent heads than the workers have greenlets: probes queue behind them, and are
    answered once gunicorn drops them (GUNICORN_KEEPALIVE, 5 s), not after 75 s."""
    port = stack.port("app")
    greenlets = WORKERS * int(stack.state["settings"]["GUNICORN_WORKER_CONNECTIONS"])
    with half_sent(port, greenlets + 200):
        started = time.monotonic()
        waits = [_probe(port, timeout=40) for _ in range(5)]
        assert time.monotonic() - started < 3 * GUNICORN_HEAD_BOUND + 5, waits


@pytest.fixture(autouse=True)
def _nginx_still_answers(stack: StackInfo) -> Iterator[None]:
    """Each test leaves the stack answering (the next test's probes are not queued behind it)."""
    yield
    assert _probe(stack.port("nginx"), timeout=30) < 30
