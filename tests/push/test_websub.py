"""WebSub on the real PostgreSQL: feeds advertise the hub, a write's changed feeds are announced
from the outbox after commit, retried while the hub is unreachable, never blocking the write.

The hub is a recorder in this test (an HTTP server that records each publish request): no WebSub
hub installs from the registries without more (flask-websub's hub needs Celery and a subscriber
round trip to notify anything), and what is under test is what the publisher sends and when."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs
from xml.etree import ElementTree

import pytest
from flask import Flask
from sqlalchemy import text

from app.extensions import db, push
from devstack.servers import free_port
from tests.push.conftest import a_category, an_author, create, retitle

BASE = "https://api.readwire.example"


class Recorder:
    def __init__(self) -> None:
        self.requests: list[dict[str, list[str]]] = []
        self.status = 204
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hub"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                form = parse_qs(self.rfile.read(length).decode())
                recorder.requests.append({**form, "content-type": [self.headers.get("Content-Type", "")]})
                self.send_response(recorder.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        return Handler

    def topics(self) -> list[str]:
        return [r["hub.url"][0] for r in self.requests]


@pytest.fixture
def hub() -> Iterator[Recorder]:
    recorder = Recorder()
    yield recorder
    recorder.server.shutdown()
    recorder.server.server_close()


def outbox(app: Flask) -> list[tuple[str, int]]:
    with app.app_context():
        rows = db.session.execute(text("SELECT topic, attempts FROM websub_outbox ORDER BY id")).all()
        db.session.remove()
        return [(r[0], r[1]) for r in rows]


def clear_outbox(app: Flask) -> None:
    with app.app_context():
        db.session.execute(text("DELETE FROM websub_outbox"))
        db.session.commit()
        db.session.remove()


def test_feeds_advertise_the_hub_only_when_one_is_configured(make_app: Callable[..., Flask], hub: Recorder) -> None:
    with_hub = make_app(WEBSUB_HUB_URL=hub.url)
    # Another Redis database: both apps would otherwise share each other's cached pages.
    without = make_app(REDIS_URL=with_hub.config["REDIS_URL"].rpartition("/")[0] + "/1")
    feed = with_hub.test_client().get("/api/v1/feed.json").get_json()
    assert feed["hubs"] == [{"type": "WebSub", "url": hub.url}]
    atom = ElementTree.fromstring(with_hub.test_client().get("/api/v1/feed.atom").data)
    links = {link.get("rel"): link.get("href") for link in atom.findall("{http://www.w3.org/2005/Atom}link")}
    assert links["hub"] == hub.url
    assert links["self"] == "http://localhost/api/v1/feed.atom"  # the topic: the feed's own URL
    assert "hubs" not in without.test_client().get("/api/v1/feed.json").get_json()
    assert b'rel="hub"' not in without.test_client().get("/api/v1/feed.atom").data


def test_a_write_announces_every_feed_it_changed_after_commit(make_app: Callable[..., Flask], hub: Recorder) -> None:
    app = make_app(WEBSUB_HUB_URL=hub.url, PUBLIC_BASE_URL=BASE)
    clear_outbox(app)
    author, category = an_author(app), a_category(app)
    with app.app_context():
        username = db.session.execute(text("SELECT username FROM authors WHERE id = :id"), {"id": author}).scalar()
    post_id = create(app, author, "Announced", category)
    expected = {
        f"{BASE}/api/v1/{path}.{fmt}"
        for path in ("feed", f"categories/{category}/feed", f"authors/{username}/feed")
        for fmt in ("json", "atom")
    }
    assert {topic for topic, _ in outbox(app)} == expected  # committed with the write, not sent yet
    taken, failed = push.state(app).websub.drain()
    assert (taken, failed) == (len(expected), 0)
    assert set(hub.topics()) == expected and len(hub.topics()) == len(expected)
    assert all(r["hub.mode"] == ["publish"] for r in hub.requests)
    assert all(r["content-type"] == ["application/x-www-form-urlencoded"] for r in hub.requests)
    assert outbox(app) == []
    # A rolled-back edit announces nothing.
    with app.app_context():
        from app.models import Post

        post = db.session.get(Post, post_id)
        assert post is not None
        post.title = "Rolled back"
        db.session.flush()
        db.session.rollback()
        db.session.remove()
    assert outbox(app) == []


def test_an_unreachable_hub_delays_the_announcement_never_the_write(
    make_app: Callable[..., Flask], hub: Recorder
) -> None:
    down = f"http://127.0.0.1:{free_port()}/hub"
    app = make_app(WEBSUB_HUB_URL=down, PUBLIC_BASE_URL=BASE, WEBSUB_RETRY_BASE=0.0, WEBSUB_TIMEOUT=1.0)
    clear_outbox(app)
    author, category = an_author(app), a_category(app)
    started = time.monotonic()
    post_id = create(app, author, "While the hub is down", category)
    assert time.monotonic() - started < 3  # the write did not wait for any hub
    websub = push.state(app).websub
    assert websub.drain()[0] == 0
    left = outbox(app)
    assert left and all(attempts == 1 for _, attempts in left)  # kept, with one attempt counted
    hub.status = 503  # the hub answers, but refuses: still kept
    websub.hub_url = hub.url
    assert websub.drain()[0] == 0 and all(attempts == 2 for _, attempts in outbox(app))
    hub.status = 204
    retitle(app, author, post_id, "Edited while the hub was failing")  # the same feeds again
    assert websub.drain() == (len({t for t, _ in left}), 0)
    assert outbox(app) == []
    announced = hub.topics()[-len({t for t, _ in left}) :]
    assert sorted(announced) == sorted({t for t, _ in left})  # each feed once, however many rows named it


def test_a_silent_hub_costs_one_timeout_per_drain_not_one_per_feed(make_app: Callable[..., Flask]) -> None:
    """A hub that accepts connections and never answers: the first URL times out, the others of
    the batch are backed off untried (each would hold the batch's row locks another timeout)."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)
    accepted: list[socket.socket] = []

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                accepted.append(silent.accept()[0])

    threading.Thread(target=accept, daemon=True).start()
    url = f"http://127.0.0.1:{silent.getsockname()[1]}/hub"
    app = make_app(WEBSUB_HUB_URL=url, PUBLIC_BASE_URL=BASE, WEBSUB_RETRY_BASE=0.0, WEBSUB_TIMEOUT=0.5)
    try:
        clear_outbox(app)
        create(app, an_author(app), "While the hub is silent", a_category(app))
        topics = {topic for topic, _ in outbox(app)}
        assert len(topics) >= 4  # the global, category and author feeds, two formats each
        assert push.state(app).websub.drain() == (0, len(topics))
        assert len(accepted) == 1, f"{len(accepted)} connections for {len(topics)} feeds"
        assert {topic for topic, _ in outbox(app)} == topics
        assert all(attempts == 1 for _, attempts in outbox(app))  # every row backed off, none lost
    finally:
        silent.close()
        for conn in accepted:
            conn.close()


def test_the_drain_loop_announces_as_soon_as_a_commit_wrote_rows(make_app: Callable[..., Flask], hub: Recorder) -> None:
    app = make_app(WEBSUB_HUB_URL=hub.url, PUBLIC_BASE_URL=BASE)
    clear_outbox(app)
    websub = push.state(app).websub
    stop = threading.Event()
    loop = threading.Thread(target=websub.drain_forever, args=(app, 60.0, stop), daemon=True)  # a worker's loop
    loop.start()
    try:
        author, category = an_author(app), a_category(app)
        create(app, author, "Woken", category)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not hub.requests:
            time.sleep(0.05)
        assert hub.requests, "the commit did not wake the drain loop (its sweep is 60 s away)"
    finally:
        stop.set()
        websub.poke()
        loop.join(15)
    assert not loop.is_alive(), "the drain loop did not stop when asked"
