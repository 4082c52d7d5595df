"""Push tests run on committed data (a database of their own), the real Redis and PostgreSQL,
and read streams through the WSGI app as a client would (one reader thread per stream)."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis
from flask import Flask

from app.extensions import db, push
from app.models import Author, Category, Post
from app.services import writes
from devstack.servers import Redis
from tests.conftest import build_app, migrate_and_seed

PUSH_CONFIG = {
    "CACHE_BREAKER_COOLDOWN": 0.2,
    "CACHE_TIMEOUT": 0.05,
    "SSE_HEARTBEAT": 0.3,
    # No periodic sweep within a test: an event must arrive by its doorbell.
    "SSE_POLL_INTERVAL": 60.0,
    "RATELIMIT_ENABLED": False,
}
WAIT = 15.0  # generous: the machine is shared


@pytest.fixture(scope="module")
def push_db(make_database) -> str:  # type: ignore[no-untyped-def]
    url = make_database("readwire_push")
    migrate_and_seed(build_app(url), 60, seed=5)
    return url


@pytest.fixture
def make_app(push_db: str, redis_server: Redis) -> Iterator[Callable[..., Flask]]:
    if not redis_server.is_running():
        redis_server.restart()
    client = redis.Redis.from_url(redis_server.url)
    client.flushdb()
    client.close()
    built: list[Flask] = []

    def make(**overrides: Any) -> Flask:
        application = build_app(push_db, **{"REDIS_URL": redis_server.url, **PUSH_CONFIG, **overrides})
        built.append(application)
        return application

    yield make
    for application in built:
        push.state(application).hub.stop()
        with application.app_context():
            db.engine.dispose()


@dataclass
class Message:
    event: str  # "message" when the block names none; "" for comment/id-only blocks
    data: str
    id: str | None
    comments: list[str]


def parse(block: str) -> Message:
    event, data, ident, comments = "", [], None, []
    for line in block.split("\n"):
        if line.startswith(":"):
            comments.append(line[1:].strip())
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
        elif name == "id":
            ident = value
    if data and not event:
        event = "message"
    return Message(event, "\n".join(data), ident, comments)


@dataclass
class Stream:
    """A stream read by a thread; messages (events, heartbeats) arrive on `messages`."""

    status: int
    headers: Any
    body: bytes = b""
    messages: queue.Queue[Message] = field(default_factory=queue.Queue)
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def next_event(self, timeout: float = WAIT) -> Message:
        """The next message that is an event (heartbeats and id-only blocks skipped); queue.Empty
        when none came within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            message = self.messages.get(timeout=max(0.0, deadline - time.monotonic()))
            if message.event:
                return message

    def close(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(WAIT)
            assert not self.thread.is_alive(), "the stream did not end"


def open_stream(app: Flask, url: str, headers: dict[str, str] | None = None) -> Stream:
    response = app.test_client().get(url, headers=headers or {}, buffered=False)
    stream = Stream(response.status_code, response.headers)
    if response.status_code != 200:
        stream.body = response.get_data()
        return stream

    def read() -> None:
        buffer = ""
        try:
            for chunk in response.response:
                buffer += chunk.decode() if isinstance(chunk, bytes) else chunk
                while "\n\n" in buffer:
                    block, buffer = buffer.split("\n\n", 1)
                    stream.messages.put(parse(block))
                if stream.stop.is_set():
                    break
        finally:
            response.close()

    stream.thread = threading.Thread(target=read, daemon=True)
    stream.thread.start()
    return stream


def an_author(app: Flask) -> int:
    with app.app_context():
        return int(db.session.query(Author.id).order_by(Author.id).limit(1).scalar())


def a_category(app: Flask) -> str:
    with app.app_context():
        return str(db.session.query(Category.slug).order_by(Category.id).limit(1).scalar())


def create(app: Flask, author_id: int, title: str, category: str, status: str = "published") -> int:
    with app.app_context():
        post = writes.create_post(
            author_id,
            {"title": title, "summary": "s", "body": "b", "category": category, "tags": [], "status": status},
        )
        db.session.remove()
        return int(post["id"])


def retitle(app: Flask, author_id: int, post_id: int, title: str) -> None:
    with app.app_context():
        writes.update_post(author_id, post_id, {"title": title})
        db.session.remove()


def delete(app: Flask, author_id: int, post_id: int) -> None:
    with app.app_context():
        writes.delete_post(author_id, post_id)
        db.session.remove()


def post_count(app: Flask) -> int:
    with app.app_context():
        return int(db.session.query(Post.id).count())
