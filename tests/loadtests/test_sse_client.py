"""The streamers' client (loadtests/sse_client.py) against the real app over a real socket (PostgreSQL, Redis,
werkzeug's threaded server): an event written while the client was away comes back on its Last-Event-ID as a
replay, timed from the reconnect's request; events written while it is connected are live, from written_at."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from werkzeug.serving import WSGIRequestHandler, make_server

from loadtests.push_delivery import LIVE, REPLAY, Delivery
from loadtests.sse_client import SseClient
from tests.push.conftest import WAIT, a_category, an_author, create, make_app, push_db  # noqa: F401 (fixtures)


class Http11(WSGIRequestHandler):
    protocol_version = "HTTP/1.1"  # chunked framing, as gunicorn sends the stream


@pytest.fixture
def served(make_app: Callable[..., Flask]) -> Iterator[tuple[Flask, int]]:  # noqa: F811 (the imported fixture)
    app = make_app()
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=Http11)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield app, server.server_port
    server.shutdown()
    thread.join(WAIT)


class Held:
    """One connection of the client, read by a thread; deliveries arrive on `got`."""

    def __init__(self, client: SseClient) -> None:
        self.client = client
        self.got: queue.Queue[tuple[dict[str, Any], Delivery | None]] = queue.Queue()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._hold, daemon=True)
        self.thread.start()

    def _hold(self) -> None:
        try:
            self.client.stream(lambda event, delivery: self.got.put((event, delivery)))
        except OSError as exc:
            if not self.client.dropped:
                self.error = exc
        finally:
            self.client.close()

    def opened(self, before: str | None) -> None:
        """Waits for the stream's opening message (its id differs from `before`): the server holds it now."""
        deadline = time.monotonic() + WAIT
        while self.client.last_id == before or self.client.connected_at is None:
            assert time.monotonic() < deadline and self.thread.is_alive(), f"the stream did not open: {self.error}"
            time.sleep(0.01)

    def next(self) -> tuple[int, Delivery]:
        event, delivery = self.got.get(timeout=WAIT)
        assert delivery is not None, event
        return int(event["post"]["id"]), delivery

    def drop(self) -> None:
        self.client.drop()
        self.thread.join(WAIT)
        assert not self.thread.is_alive() and self.error is None


def test_a_missed_event_is_a_replay_from_the_reconnect_and_the_others_are_live(served: tuple[Flask, int]) -> None:
    app, port = served
    author, category = an_author(app), a_category(app)
    client = SseClient("127.0.0.1", port, "/api/v1/stream")
    first = Held(client)
    first.opened(None)
    seen = create(app, author, "Seen live", category)
    assert first.next()[0] == seen
    first.drop()

    missed = create(app, author, "Written while away", category)
    resumed_from = client.last_id
    second = Held(client)
    post_id, replay = second.next()
    assert post_id == missed
    assert client.connection is not None and client.connection.resumed
    assert replay.name == REPLAY  # not LIVE: the client was away when it was written
    assert replay.ms <= replay.since_written_ms  # timed from the reconnect's request, not from written_at
    assert replay.ms == pytest.approx((time.time() - client.connection.sent_at) * 1000, abs=WAIT * 1000)

    second.opened(resumed_from)
    live = create(app, author, "Seen live again", category)
    post_id, delivery = second.next()
    assert (post_id, delivery.name, delivery.cut) == (live, LIVE, False)
    assert delivery.ms == delivery.since_written_ms
    second.drop()
    assert second.got.empty()  # nothing twice
