"""The hub writes live events to a waiting stream's socket itself (app/push/hub.py: Tap) when the
server hands the app its socket (gunicorn's `gunicorn.socket`): each event whole, in gunicorn's
chunked framing, in order, across a socket that cannot take a whole message at once; a stream whose
client is gone ends and gives its slot back. Here the socket is one end of a socket pair given to the
WSGI app in the environ; the other end is read as the client's connection."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from flask import Flask

from app.extensions import push
from tests.push.conftest import WAIT, Message, a_category, an_author, create, parse

STREAM = "/api/v1/stream"


class Wire:
    """The client's end of the connection: chunked messages, as gunicorn frames them, read by a thread."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.raw = bytearray()
        self.lock = threading.Lock()
        self.reading = threading.Event()
        self.reading.set()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while True:
            self.reading.wait()
            try:
                data = self.sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            with self.lock:
                self.raw += data

    def messages(self) -> list[Message]:
        """Every SSE message in the chunks received so far (a chunk cut short is left for later)."""
        with self.lock:
            raw = bytes(self.raw)
        out: list[Message] = []
        while raw:
            size_line, sep, rest = raw.partition(b"\r\n")
            if not sep:
                break
            size = int(size_line, 16)
            if len(rest) < size + 2:
                break
            assert rest[size : size + 2] == b"\r\n", "a chunk not followed by CRLF: framing broken"
            out += [parse(block) for block in rest[:size].decode().split("\n\n") if block]
            raw = rest[size + 2 :]
        return out

    def events(self, count: int) -> list[Message]:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            got = [m for m in self.messages() if m.event]
            if len(got) >= count:
                return got
            time.sleep(0.01)
        raise AssertionError(f"fewer than {count} events on the wire: {self.messages()}")


@contextmanager
def direct_stream(app: Flask, url: str = STREAM, sndbuf: int | None = None) -> Iterator[tuple[Wire, list[bytes]]]:
    """A stream whose environ carries the server's socket; yields (the client's wire, the chunks the
    WSGI iterator gave the server to write itself)."""
    server, client = socket.socketpair()
    if sndbuf is not None:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, sndbuf)
    server.settimeout(WAIT)  # non-blocking underneath, as gevent's socket (a blocking one is never written)
    response = app.test_client().get(url, buffered=False, environ_overrides={"gunicorn.socket": server})
    assert response.status_code == 200
    iterated: list[bytes] = []
    stop = threading.Event()

    def serve() -> None:  # the server's loop: write what the iterator yields, chunked (as gunicorn does)
        try:
            for chunk in response.response:
                iterated.append(chunk)
                server.sendall(b"%X\r\n%s\r\n" % (len(chunk), chunk))
                if stop.is_set():
                    break
        except OSError:
            pass
        finally:
            response.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    wire = Wire(client)
    try:
        deadline = time.monotonic() + WAIT
        while not iterated and time.monotonic() < deadline:  # the opening: the stream is past its start
            time.sleep(0.01)
        yield wire, iterated
    finally:
        stop.set()
        client.close()
        thread.join(WAIT)
        server.close()


def test_the_hub_writes_live_events_to_the_socket_whole_framed_and_in_order(make_app: Callable[..., Flask]) -> None:
    app = make_app(SSE_HEARTBEAT=120.0)
    author, category = an_author(app), a_category(app)
    with (
        direct_stream(app) as (wire, iterated),
        direct_stream(app, f"/api/v1/categories/{category}/stream") as (
            scoped,
            _,
        ),
    ):
        time.sleep(0.2)  # both parked with the hub
        ids = [create(app, author, f"Direct {n}", category) for n in range(3)]
        for w in (wire, scoped):
            got = w.events(3)
            assert [json.loads(m.data)["post"]["id"] for m in got] == ids
            assert all(m.event == "post.created" for m in got)
            positions = [push.state(app).codec.decode(m.id or "") for m in got]
            assert positions == sorted(positions) and len(set(positions)) == 3
        # Written by the hub, not given to the server by the stream's iterator.
        assert not any(b"post.created" in chunk for chunk in iterated)


def test_a_socket_that_takes_part_of_a_message_gets_the_rest_before_anything_else(
    make_app: Callable[..., Flask],
) -> None:
    """The client stops reading until its buffers are full: the hub's write is cut short (or refused),
    and the stream sends the end of the message itself; every event still arrives whole and in order."""
    app = make_app(SSE_HEARTBEAT=120.0)
    author, category = an_author(app), a_category(app)
    with direct_stream(app, sndbuf=4096) as (wire, _):
        time.sleep(0.2)
        wire.reading.clear()
        time.sleep(0.1)
        ids = [create(app, author, "x" * 200 + f" {n}", category) for n in range(40)]  # far over the buffers
        wire.reading.set()
        got = wire.events(40)
        assert [json.loads(m.data)["post"]["id"] for m in got] == ids


def test_a_stream_whose_client_is_gone_ends_and_gives_its_slot_back(make_app: Callable[..., Flask]) -> None:
    app = make_app(SSE_HEARTBEAT=120.0)
    author, category = an_author(app), a_category(app)
    slots = push.state(app).slots
    with direct_stream(app) as (wire, _):
        time.sleep(0.2)
        assert len(slots.active) == 1
        wire.sock.shutdown(socket.SHUT_RDWR)  # the client goes; the stream learns it from the hub's next write
        wire.sock.close()
        create(app, author, "Nobody listens", category)
        deadline = time.monotonic() + WAIT
        while slots.active and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not slots.active
