"""Every error a client can get, from Nginx itself or from gunicorn itself, is problem+json.

Raw sockets: these requests are malformed or oversized on purpose, which http.client refuses
to send.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass

import pytest

from tests.stack.conftest import StackInfo, request

pytestmark = pytest.mark.slow  # stands up real servers (gunicorn, Nginx, PostgreSQL, Redis)

CHUNK = 64 * 1024


@dataclass
class Raw:
    status: int
    headers: dict[str, str]
    body: bytes

    def problem(self) -> dict[str, object]:
        assert self.headers.get("content-type") == "application/problem+json", (self.status, self.headers, self.body)
        body: dict[str, object] = json.loads(self.body)
        assert {"type", "title", "status", "detail", "code"} <= set(body), body
        assert body["status"] == self.status
        return body


def _parse(data: bytes) -> Raw:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith("HTTP/1."), data[:200]
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        body = body[: int(headers["content-length"])]
    return Raw(int(lines[0].split()[1]), headers, body)


def exchange(port: int, head: bytes, chunks: int = 0, chunk: bytes = b"a" * CHUNK, timeout: float = 30.0) -> Raw:
    """Send `head` (and `chunks` chunks of a chunked body), read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head)
        try:
            for _ in range(chunks):
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            if chunks:
                sock.sendall(b"0\r\n\r\n")
        except OSError:  # the server answered early and closed: read what it said
            pass
        data = b""
        while True:
            try:
                got = sock.recv(65536)
            except ConnectionResetError:
                break
            if not got:
                break
            data += got
            if b"\r\n\r\n" in data and _complete(data):
                break
    return _parse(data)


def _complete(data: bytes) -> bool:
    head, _, body = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return False


REFUSED = {  # what is sent, and the status each server answers (None: the app answers, any status)
    "bad request line": (b"GARBAGE\r\n\r\n", 400, 400),
    "long URI": (b"GET /api/v1/feed?x=" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, 414),
    "large header": (b"GET /api/v1/feed HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n", 431, 431),
    "bad chunk": (
        b"POST /api/v1/auth/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
        400,
        400,
    ),
    "unknown transfer coding": (
        b"POST /api/v1/auth/token HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        501,
        None,
    ),
}


@pytest.mark.parametrize("service", ["nginx", "app"])
@pytest.mark.parametrize("case", sorted(REFUSED))
def test_requests_the_server_refuses_itself_get_problem_json(stack: StackInfo, service: str, case: str) -> None:
    head, at_nginx, at_app = REFUSED[case]
    answer = exchange(stack.port(service), head)
    status = at_nginx if service == "nginx" else at_app
    assert status is None or answer.status == status, (case, answer.status, answer.body[:200])
    body = answer.problem()
    assert "GARBAGE" not in str(body) and "aaaa" not in str(body)  # never an echo of the request


def _post_head(token: str, extra: bytes) -> bytes:
    return (
        b"POST /api/v1/posts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nConnection: close\r\n"
        b"Authorization: Bearer " + token.encode() + b"\r\n" + extra + b"\r\n"
    )


@pytest.mark.parametrize("service", ["nginx", "app"])
def test_a_body_over_one_mib_is_413_chunked_or_not(stack: StackInfo, token: str, service: str) -> None:
    port = stack.port(service)
    chunked = exchange(
        port, _post_head(token, b"Transfer-Encoding: chunked\r\n"), chunks=20, chunk=b'{"t":"' + b"a" * CHUNK
    )
    assert chunked.status == 413, chunked.body[:300]
    assert chunked.problem()["code"] == "payload_too_large"
    declared = exchange(port, _post_head(token, b"Content-Length: 2000000\r\n"))
    assert declared.status == 413 and declared.problem()["code"] == "payload_too_large"
    # Just under the limit, chunked: read whole (then refused by the schema, not truncated into a 400).
    body = json.dumps({"title": "t", "summary": "s", "body": "b" * (1024 * 1024 - 200), "bogus": 1}).encode()
    under = exchange(port, _post_head(token, b"Transfer-Encoding: chunked\r\n"), chunks=1, chunk=body)
    assert under.status == 422, under.body[:300]


def test_nginx_answers_for_what_it_serves_itself_as_problem_json(stack: StackInfo) -> None:
    port = stack.port("nginx")
    missing = request(port, "/_static/no-such-file.json")
    assert missing.status == 404 and missing.headers["Content-Type"] == "application/problem+json"
    assert missing.json()["code"] == "not_found"
    wrong = request(port, "/_static/no-such-file.json", method="DELETE")
    assert wrong.status == 405 and wrong.json()["code"] == "method_not_allowed"
    # The app's own errors pass through as they are (not replaced by the edge's pages).
    cursor = request(port, "/api/v1/feed?cursor=nope")
    assert cursor.status == 400 and cursor.json()["code"] == "invalid_cursor"
    absent = request(port, "/api/v1/posts/999999999")
    assert absent.status == 404 and "999999999" in absent.json()["detail"]


def test_a_body_that_never_arrives_is_cut_off_without_a_page(stack: StackInfo) -> None:
    """client_body_timeout: Nginx never sends its 408 (it resets the connection), so a client
    that promised a body and stalls gets no response at all, and no HTML."""
    head = (
        b"POST /api/v1/auth/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n{"
    )
    with socket.create_connection(("127.0.0.1", stack.port("nginx")), timeout=60) as sock:
        sock.sendall(head)
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            data = b""
    assert data == b"" or _parse(data).problem()


@pytest.fixture(scope="module")
def token(editor_token: str) -> str:
    return editor_token
