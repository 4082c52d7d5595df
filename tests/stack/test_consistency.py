"""Writes through the stack: visible at once at the app, within the edge's 1 s through Nginx;
outbox rows left by a worker that died mid-write are applied by the workers' sweep."""

from __future__ import annotations

import time
import uuid

import psycopg
import pytest

from tests.stack.conftest import OUTBOX_SWEEP, StackInfo, at_second_start, request, wait_for

pytestmark = pytest.mark.slow  # stands up real servers (gunicorn, Nginx, PostgreSQL, Redis)

EDGE_TTL = 1.0
# Slack for the poll interval (20 ms) and the edge's refresh of the expired entry.
EDGE_SLACK = 0.15


@pytest.fixture(scope="module")
def token(editor_token: str) -> str:
    return editor_token


def _title(port: int, post_id: int) -> tuple[str, str | None]:
    response = request(port, f"/api/v1/posts/{post_id}")
    assert response.status == 200, response.body
    return response.json()["title"], response.headers.get("X-Cache-Status")


def test_edit_is_seen_at_once_by_the_app_and_within_one_second_through_nginx(stack: StackInfo, token: str) -> None:
    nginx, app = stack.port("nginx"), stack.port("app")
    auth = {"Authorization": f"Bearer {token}"}
    category = request(app, "/api/v1/categories").json()["data"][0]["slug"]
    created = request(
        nginx, "/api/v1/posts", "POST", auth, {"title": "Before the edit", "body": "Body.", "category": category}
    )
    assert created.status == 201, created.body
    post_id = created.json()["id"]

    # Fill the edge just after a second boundary: an edge that kept pages for its TTL rounded up
    # to whole seconds (Nginx's plain s-maxage handling: 1-2 s) would show the old title ~1.9 s.
    at_second_start()
    assert _title(nginx, post_id) == ("Before the edit", "MISS")
    assert _title(nginx, post_id) == ("Before the edit", "HIT")

    edited = request(nginx, f"/api/v1/posts/{post_id}", "PATCH", auth, {"title": "After the edit"})
    written = time.monotonic()
    assert edited.status == 200, edited.body
    assert edited.headers.get("X-Cache-Status") in (None, "BYPASS")
    assert _title(app, post_id)[0] == "After the edit"  # the origin: at once
    # The edge still answers from its cache for the rest of its second...
    assert _title(nginx, post_id) == ("Before the edit", "HIT")
    # ...and no longer than that.
    seen: list[tuple[float, str, str | None]] = []

    def edge_shows_edit() -> bool:
        title, cache = _title(nginx, post_id)
        seen.append((time.monotonic() - written, title, cache))
        return title == "After the edit"

    assert wait_for(edge_shows_edit, 3.0, interval=0.02), seen[-5:]
    assert seen[-1][0] <= EDGE_TTL + EDGE_SLACK, f"edge showed the edit after {seen[-1][0]:.3f} s: {seen[-4:]}"


def test_outbox_rows_left_by_a_dead_worker_are_swept(stack: StackInfo, post_ids: list[int]) -> None:
    """A worker killed between its commit and its INCRs leaves its outbox row behind; no live
    worker is "pending", so only the periodic sweep in gunicorn.conf.py applies it."""
    app = stack.port("app")
    post_id = post_ids[7]
    old_title = _title(app, post_id)[0]
    assert _title(app, post_id)[0] == old_title  # cached in Redis (post TTL 60 s)
    new_title = f"Swept {uuid.uuid4().hex[:6]}"
    with psycopg.connect(stack.state["database_url"], autocommit=True) as conn, conn.transaction():
        conn.execute("UPDATE posts SET title = %s WHERE id = %s", (new_title, post_id))
        conn.execute("INSERT INTO cache_outbox (namespaces, created_at) VALUES (%s, now())", (f"post:{post_id}",))
    committed = time.monotonic()
    # Until a drain bumps post:<id>, the cached page (60 s TTL) keeps the old title.
    assert wait_for(lambda: _title(app, post_id)[0] == new_title, OUTBOX_SWEEP + 1.0 + 2.0)
    elapsed = time.monotonic() - committed
    with psycopg.connect(stack.state["database_url"]) as conn:
        assert conn.execute("SELECT count(*) FROM cache_outbox").fetchone() == (0,)
    assert elapsed <= OUTBOX_SWEEP + 1.0 + 1.0, elapsed  # sweep interval + one tick + slack
