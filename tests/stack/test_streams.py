"""Server-Sent Events through the whole stack (Nginx, several gunicorn gevent workers, Redis,
PostgreSQL): every stream gets every write wherever it landed, unbuffered and outside the
microcache, and a reconnect with Last-Event-ID resumes without a gap."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.stack.conftest import REPO, StackInfo, request

pytestmark = pytest.mark.slow  # stands up the serving stack (make test runs it; test-fast skips it)

PASSWORD = "stack-stream-password-0123"
STREAMS = 9  # three per worker on average: the write is made on one of them


@pytest.fixture(scope="module")
def editor_token(stack: StackInfo) -> str:
    username = f"streamer{uuid.uuid4().hex[:8]}"
    res = subprocess.run(
        [str(Path(sys.executable).parent / "flask"), "--app", "app", "create-editor", username],
        input=f"{PASSWORD}\n{PASSWORD}\n",
        cwd=REPO,
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    signed = request(
        stack.port("nginx"), "/api/v1/auth/token", method="POST", body={"username": username, "password": PASSWORD}
    )
    assert signed.status == 200, signed.body
    token: str = signed.json()["access_token"]
    return token


class Sse:
    """One stream over a raw HTTP/1.1 connection (chunked, read line by line)."""

    def __init__(self, port: int, path: str, headers: dict[str, str] | None = None, source: str | None = None) -> None:
        self.conn = http.client.HTTPConnection(
            "127.0.0.1", port, timeout=20, source_address=(source, 0) if source else None
        )
        self.conn.request("GET", path, headers={"Accept": "text/event-stream", **(headers or {})})
        self.response = self.conn.getresponse()

    def next_event(self, timeout: float = 20.0) -> dict[str, str]:
        """The next dispatched event's fields (comments and id-only blocks skipped)."""
        deadline = time.monotonic() + timeout
        fields: dict[str, str] = {}
        while time.monotonic() < deadline:
            line = self.response.readline().decode()
            if line in ("\n", ""):
                if "data" in fields:
                    return fields
                fields = {}
                if line == "":
                    raise EOFError("the stream ended")
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.rstrip("\n").partition(":")
            fields[name] = value.removeprefix(" ")
        raise TimeoutError("no event")

    def close(self) -> None:
        self.conn.close()


def _create(stack: StackInfo, token: str, title: str) -> int:
    categories = request(stack.port("app"), "/api/v1/categories").json()["data"]
    body = {"title": title, "body": "Pushed.", "category": categories[0]["slug"], "tags": []}
    created = request(
        stack.port("nginx"), "/api/v1/posts", "POST", headers={"Authorization": f"Bearer {token}"}, body=body
    )
    assert created.status == 201, created.body
    post_id: int = created.json()["id"]
    return post_id


def test_every_stream_on_every_worker_gets_each_write_through_nginx(stack: StackInfo, editor_token: str) -> None:
    port = stack.port("nginx")
    streams = [Sse(port, "/api/v1/stream", source=f"127.0.0.{10 + i}") for i in range(STREAMS)]
    try:
        for sse in streams:
            assert sse.response.status == 200
            assert sse.response.headers["Content-Type"].startswith("text/event-stream")
            assert sse.response.headers.get("X-Cache-Status") in (None, "", "BYPASS")
            assert sse.response.headers["Cache-Control"] == "no-store"
        time.sleep(1.0)  # every worker's hub has subscribed (it starts with its first stream)
        started = time.monotonic()
        post_id = _create(stack, editor_token, "Through the stack")
        delays = []
        for sse in streams:
            event = sse.next_event()
            assert event["event"] == "post.created" and json.loads(event["data"])["post"]["id"] == post_id
            delays.append(time.monotonic() - started)
        assert max(delays) < 5, delays  # the doorbell, not a sweep
    finally:
        for sse in streams:
            sse.close()


def test_a_reconnect_with_last_event_id_through_nginx_misses_nothing(stack: StackInfo, editor_token: str) -> None:
    port = stack.port("nginx")
    first = Sse(port, "/api/v1/stream", source="127.0.0.30")
    time.sleep(0.5)
    seen = _create(stack, editor_token, "Seen before the drop")
    event = first.next_event()
    assert json.loads(event["data"])["post"]["id"] == seen
    first.close()
    missed = [_create(stack, editor_token, f"Missed {i}") for i in range(3)]
    again = Sse(port, "/api/v1/stream", {"Last-Event-ID": event["id"]}, source="127.0.0.31")
    try:
        assert [json.loads(again.next_event()["data"])["post"]["id"] for _ in missed] == missed
        live = _create(stack, editor_token, "Live after the resume")
        assert json.loads(again.next_event()["data"])["post"]["id"] == live
    finally:
        again.close()


def test_a_tampered_last_event_id_is_400_problem_json_through_nginx(stack: StackInfo) -> None:
    response = request(stack.port("nginx"), "/api/v1/stream", headers={"Last-Event-ID": "forged"})
    assert response.status == 400 and response.json()["code"] == "invalid_cursor"
