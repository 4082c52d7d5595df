"""Idempotency-Key through Nginx and gunicorn: a request in flight is 409 to its twin, and a
request cut off by a killed worker is answered so that the client retries only what is safe."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from devstack.stack import children
from tests.stack.conftest import WORKERS, Response, StackInfo, request, wait_for

pytestmark = pytest.mark.slow  # stands up real servers (gunicorn, Nginx, PostgreSQL, Redis)


@pytest.fixture
def locked_post(stack: StackInfo, post_ids: list[int]) -> Iterator[tuple[int, psycopg.Connection]]:  # type: ignore[type-arg]
    """A visible post whose row this test holds locked: a comment on it waits in its UPDATE."""
    post_id = post_ids[7]
    with psycopg.connect(stack.state["database_url"]) as conn:
        conn.execute("SELECT id FROM posts WHERE id = %s FOR UPDATE", (post_id,))
        yield post_id, conn
        conn.rollback()


def _comments(stack: StackInfo, post_id: int, text: str) -> int:
    with psycopg.connect(stack.state["database_url"], autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM comments WHERE post_id = %s AND body = %s", (post_id, text)).fetchone()
    assert row is not None
    return int(row[0])


def _waiting_on_the_lock(stack: StackInfo) -> int:
    """Backends waiting for a lock in a comment's UPDATE (read on a connection of its own: a
    transaction sees pg_stat_activity as it was when it first looked)."""
    with psycopg.connect(stack.state["database_url"], autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND query LIKE 'UPDATE posts SET %comment_count=%'"
        ).fetchone()
    assert row is not None
    return int(row[0])


def _in_background(fn: object, *args: object) -> tuple[threading.Thread, list[Response | BaseException]]:
    out: list[Response | BaseException] = []

    def run() -> None:
        try:
            out.append(fn(*args))  # type: ignore[operator]
        except BaseException as exc:  # a reset connection is an answer too, here
            out.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def test_a_keyed_comment_in_flight_is_409_to_its_twin_and_once_for_its_retries(
    stack: StackInfo,
    editor_token: str,
    locked_post: tuple[int, psycopg.Connection],  # type: ignore[type-arg]
) -> None:
    post_id, holder = locked_post
    port = stack.port("nginx")
    text = f"keyed {uuid.uuid4().hex[:8]}"
    headers = {"Authorization": f"Bearer {editor_token}", "Idempotency-Key": f'"{text}"'}
    path = f"/api/v1/posts/{post_id}/comments"
    first, answers = _in_background(request, port, path, "POST", headers, {"body": text}, None, 60.0)
    assert wait_for(lambda: _waiting_on_the_lock(stack) >= 1, 20), "the first request never reached the lock"
    twin = request(port, path, "POST", headers=headers, body={"body": text})
    assert twin.status == 409 and twin.json()["code"] == "idempotency_key_in_use", twin.body
    holder.rollback()  # the first request goes on and commits
    first.join(30)
    assert isinstance(answers[0], Response) and answers[0].status == 201, answers
    again = request(port, path, "POST", headers=headers, body={"body": text})
    assert again.status == 201 and again.body == answers[0].body
    assert again.headers["Idempotent-Replayed"] == "true"
    assert _comments(stack, post_id, text) == 1


def _answers(port: int) -> bool:
    try:
        return request(port, "/healthz", timeout=2).status == 200
    except OSError:
        return False


def _kill_every_worker(stack: StackInfo) -> None:
    """SIGKILL every worker, then wait for the replacements to be forked and to answer: the
    next test must not meet a gunicorn whose workers are all still loading the app (seconds on
    a busy machine; test_popular's first request timed out behind this one)."""
    master = stack.pid("app")
    victims = children(master)
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    assert wait_for(lambda: not set(victims) & set(children(master)) and len(children(master)) == WORKERS, 60)
    assert wait_for(lambda: _answers(stack.port("app")), 120), "no replacement worker answers"


@pytest.mark.parametrize("keyed", [True, False])
def test_a_write_cut_off_by_a_killed_worker_is_retried_only_when_safe(
    stack: StackInfo,
    editor_token: str,
    locked_post: tuple[int, psycopg.Connection],  # type: ignore[type-arg]
    keyed: bool,
) -> None:
    post_id, holder = locked_post
    port = stack.port("nginx")
    text = f"cut off {uuid.uuid4().hex[:8]}"
    headers = {"Authorization": f"Bearer {editor_token}"}
    if keyed:
        headers["Idempotency-Key"] = f'"{text}"'
    path = f"/api/v1/posts/{post_id}/comments"
    sent, answers = _in_background(request, port, path, "POST", headers, {"body": text}, None, 60.0)
    assert wait_for(lambda: _waiting_on_the_lock(stack) >= 1, 20), "the request never reached the lock"
    _kill_every_worker(stack)
    sent.join(30)
    holder.rollback()
    answer = answers[0]
    assert isinstance(answer, Response), answer
    assert answer.headers["Content-Type"] == "application/problem+json"
    assert _comments(stack, post_id, text) == 0  # killed before its commit
    if not keyed:
        # The edge cannot know whether the write was applied: no advice to repeat it.
        assert answer.status == 502 and answer.json()["code"] == "outcome_unknown"
        assert "Retry-After" not in answer.headers
        return
    assert answer.status == 503 and answer.headers["Retry-After"] == "5"
    deadline = time.monotonic() + 30
    while True:  # the client follows the advice
        retry = request(port, path, "POST", headers=headers, body={"body": text})
        if retry.status == 201 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert retry.status == 201
    assert request(port, path, "POST", headers=headers, body={"body": text}).status == 201
    assert _comments(stack, post_id, text) == 1
