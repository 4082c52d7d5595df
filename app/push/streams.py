"""One Server-Sent Events stream: replay from a position, then live from the hub, heartbeats.

A stream holds a cursor: the position up to which its client has been given every event of its
scope. Events come from the hub's ring while it reaches back to the cursor, else from the
database (bounded; past SSE_REPLAY_MAX missed events the client gets `reset`). The cursor only
moves forward and every event is compared with it, so the seam between the replay and the live
part has neither a gap nor a duplicate. An idle stream costs a greenlet waiting on the hub's
broadcast event: no socket to Redis or PostgreSQL of its own. Under gunicorn's gevent worker a
waiting stream parks with the hub instead, which writes its live events to its socket itself
(app/push/hub.py: Tap); the stream wakes for its heartbeats and whatever the hub cannot do.

Heartbeats are SSE comments every SSE_HEARTBEAT seconds at most; when events outside the
stream's scope moved its cursor, the heartbeat carries `id:` too (an id-only message updates the
client's Last-Event-ID without firing an event), so a reconnect replays little.

Streams per client address are capped cluster-wide with leases in Redis (a sorted set per
address; a lease is renewed while its stream lives and expires with a dead worker), and per
process (SSE_MAX_STREAMS); with Redis unreachable each process counts alone.
"""

from __future__ import annotations

import logging
import os
import random
import secrets
import threading
import time
from collections import Counter
from collections.abc import Generator, Iterator
from typing import Any

import orjson
import redis

from app.cache.keys import PREFIX
from app.cache.store import CircuitBreaker
from app.push.hub import Event, Hub, Tap, redis_client
from app.urls import JSON_ROOT_URL

log = logging.getLogger(__name__)


class StreamSlots:
    """Leases on stream slots: per client address (cluster-wide in Redis) and per process."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.per_client = int(config["SSE_MAX_PER_CLIENT"])
        self.per_process = int(config["SSE_MAX_STREAMS"])
        self.lease = 3 * float(config["SSE_HEARTBEAT"])  # renewed every heartbeat or so
        self.client = redis_client(config)
        self.breaker = CircuitBreaker(config["CACHE_BREAKER_THRESHOLD"], config["CACHE_BREAKER_COOLDOWN"])
        self.local: Counter[str] = Counter()
        self.active: dict[str, str] = {}  # lease token -> client address
        self.renewed = 0.0
        self._lock = threading.Lock()

    @staticmethod
    def _key(client: str) -> str:
        return f"{PREFIX}sse:{client}"

    def acquire(self, client: str) -> str | None:
        """A lease token, or None: `client` has its quota of streams, or this process is full."""
        with self._lock:
            if len(self.active) >= self.per_process:
                return None
            token = secrets.token_hex(8)
            self.local[client] += 1
            self.active[token] = client
        count = self._shared_count(client, token)
        if (self.local[client] if count is None else count) > self.per_client:
            self.release(token)
            return None
        return token

    def full(self) -> bool:
        return len(self.active) >= self.per_process

    def _shared_count(self, client: str, token: str) -> int | None:
        if self.client is None or not self.breaker.allow():
            return None
        now = time.time()
        key = self._key(client)
        try:
            pipe = self.client.pipeline(transaction=True)
            pipe.zremrangebyscore(key, "-inf", now)
            pipe.zadd(key, {token: now + self.lease})
            pipe.zcard(key)
            pipe.expire(key, int(self.lease) + 1)
            count = int(pipe.execute()[2])
        except (redis.RedisError, OSError) as exc:
            self.breaker.failure()
            log.warning("stream leases unreachable: %s", type(exc).__name__)
            return None
        self.breaker.success()
        return count

    def release(self, token: str) -> None:
        with self._lock:
            client = self.active.pop(token, None)
            if client is None:
                return
            self.local[client] -= 1
            if self.local[client] <= 0:
                del self.local[client]
        if self.client is not None and self.breaker.allow():
            try:
                self.client.zrem(self._key(client), token)
            except (redis.RedisError, OSError):
                self.breaker.failure()  # the lease expires on its own

    def renew(self) -> None:
        """Extend this process's leases (one pipeline), at most every third of a lease."""
        now = time.time()
        if now - self.renewed < self.lease / 3 or self.client is None or not self.active:
            return
        self.renewed = now
        with self._lock:
            leases = list(self.active.items())
        by_client: dict[str, dict[str, float]] = {}
        for token, client in leases:
            by_client.setdefault(client, {})[token] = now + self.lease
        try:
            pipe = self.client.pipeline(transaction=False)
            for client, tokens in by_client.items():  # one ZADD per address, not per stream
                pipe.zadd(self._key(client), tokens, xx=True)
                pipe.expire(self._key(client), int(self.lease) + 1)
            pipe.execute()
        except (redis.RedisError, OSError) as exc:
            log.warning("stream leases not renewed: %s", type(exc).__name__)


def _reset(hub: Hub, head: int, reason: str) -> bytes:
    data = orjson.dumps({"type": "reset", "reason": reason}).decode()
    return f"id: {hub.codec.encode(head)}\nevent: reset\ndata: {data}\n\n".encode()


def direct_socket(environ: dict[str, Any]) -> tuple[Any, bool] | None:
    """The connection's socket and whether the body is chunked, when the hub may write this
    response's events to it itself (app/push/hub.py: Tap): gunicorn put it in the environ, the
    request is a GET (a HEAD's body is dropped), and the socket is plain (not TLS) and
    non-blocking (gevent's). gunicorn chunks the body of an HTTP/1.1 response without a length."""
    sock = environ.get("gunicorn.socket")
    if sock is None or environ.get("REQUEST_METHOD") != "GET" or hasattr(sock, "cipher"):
        return None
    try:
        if os.get_blocking(sock.fileno()):
            return None
    except (OSError, ValueError, AttributeError):
        return None
    return sock, environ.get("SERVER_PROTOCOL") not in (None, "HTTP/1.0", "HTTP/0.9")


def event_stream(
    hub: Hub,
    scope: str,
    position: int | None,
    heartbeat: float,
    retry_ms: int,
    on_close: Any,
    root: bytes = b"",
    direct: tuple[Any, bool] | None = None,
) -> Iterator[bytes]:
    """The stream's bytes (see the module docstring). `on_close` runs however it ends; `root`
    (JSON-escaped) replaces the ROOT_URL placeholder in post URLs (app/push/events.py); `direct`
    (direct_socket): the hub writes live events to that socket itself while the stream waits."""
    placeholder = JSON_ROOT_URL[1:]  # inside the string, without its opening quote
    inner = _event_stream(hub, scope, position, heartbeat, retry_ms, on_close, root, direct)
    try:
        for chunk in inner:
            yield chunk.replace(placeholder, root) if root and placeholder in chunk else chunk
    finally:
        inner.close()  # its own finally (on_close) runs now, not when it is collected


def _event_stream(
    hub: Hub,
    scope: str,
    position: int | None,
    heartbeat: float,
    retry_ms: int,
    on_close: Any,
    root: bytes = b"",
    direct: tuple[Any, bool] | None = None,
) -> Generator[bytes, None, None]:
    try:
        cursor = hub.last if position is None else position
        opening = f"retry: {retry_ms}\n: readwire stream {scope}\n"
        if position is None:  # the client's Last-Event-ID from the start: nothing can fall between
            opening += f"id: {hub.codec.encode(cursor)}\n"
        yield (opening + "\n").encode()
        told = cursor  # the position the client last received
        if position is not None:
            events, reset = hub.replay(position)
            if reset is not None:
                yield _reset(hub, *reset)
                cursor = told = reset[0]
            else:
                chunk = [e.frame for e in events if scope in e.scopes]
                if events:
                    cursor = events[-1].id
                if chunk:
                    told = cursor
                    yield b"".join(chunk)
        # The first beat at a random point of the interval: streams opened together (a deploy, a
        # reconnect storm) must not wake and write all at once every interval ever after.
        next_beat = time.monotonic() + heartbeat * random.uniform(0.25, 1.0)
        # Parked with the hub only once the generator runs again after a yield: gunicorn has then
        # written every byte given so far, so the hub's writes follow them whole.
        tap = None if direct is None else Tap(direct[0].fileno(), direct[1], scope, root, heartbeat)
        while True:
            while hub.last <= cursor:
                remaining = next_beat - time.monotonic()
                if remaining <= 0:
                    break
                if tap is None:
                    hub.wait(cursor, remaining)
                    continue
                tap.cursor, tap.told, tap.next_beat = cursor, told, next_beat
                hub.park(tap, remaining)
                cursor, told, next_beat = tap.cursor, tap.told, tap.next_beat
                if tap.failed:
                    return  # the client is gone (the hub's write failed)
                if tap.remainder:  # a message the hub began: its end before any other byte
                    rest, tap.remainder = tap.remainder, b""
                    direct[0].sendall(rest)  # type: ignore[index]
            with hub.cond:
                pending: list[Event] | None = hub.after(cursor)
            if pending is None:  # the ring moved past this stream (a slow client): read the database
                pending, reset = hub.replay(cursor)
                if reset is not None:
                    yield _reset(hub, *reset)
                    cursor = told = reset[0]
                    continue
            chunk = []
            for event in pending:
                cursor = event.id
                if scope in event.scopes:
                    chunk.append(event.frame)
            if chunk:
                told = cursor
                next_beat = time.monotonic() + heartbeat
                yield b"".join(chunk)
            elif time.monotonic() >= next_beat:
                beat = ": heartbeat\n"
                if cursor != told:
                    beat += f"id: {hub.codec.encode(cursor)}\n"
                    told = cursor
                next_beat = time.monotonic() + heartbeat
                yield (beat + "\n").encode()
    finally:
        on_close()
