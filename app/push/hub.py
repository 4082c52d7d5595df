"""The per-process hub: every event committed anywhere, in id order, for this process's streams.

The database is the source of truth; pub/sub is only a doorbell. After a commit that wrote
events the writer PUBLISHes them on Redis (their ids, kinds, scopes and data: the rows it has just
committed; or, when Redis cannot take it, NOTIFYs the highest id on PostgreSQL), and rings its own
hub. Each process holds one Redis subscription and one LISTEN connection (never one per stream);
any ring wakes the one fetcher. When the ring carries events that directly follow the last id the
hub has (the next ids, none between), they are appended as they are; otherwise (ids in between
that may be another writer's, still on their way, or never committed; a ring without events; the
periodic sweep) it reads the rows after the last id it has (keyset on the primary key, one query
per ring, whatever the number of streams). Either way it appends them to a bounded in-memory ring
and wakes the streams. A lost message costs nothing but delay: the next ring or the periodic sweep
(SSE_POLL_INTERVAL) fetches the same rows. Ids grow in commit order (app/push/events.py), so
"after the last id" never skips one.

Under gunicorn's gevent worker a waiting stream parks itself with the hub (a Tap: its socket, its
scope and position), and the fetcher writes the new events to every parked stream itself, in one
pass, one write(2) each, instead of waking ~250 stream greenlets per worker to write their own
(measured in a worker: ~60 us of CPU a stream, of which the write is ~8; the fan-out was most of
the commit-to-event delay). A stream whose socket would block, whose client is gone or whose
position the ring no longer holds is woken to deal with it as before.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import struct
import threading
import time
from bisect import bisect_right
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import redis
from sqlalchemy import delete, func, select, text
from sqlalchemy.engine import Engine

from app.cache.discovery import RedisTarget
from app.cache.store import CircuitBreaker
from app.models import PostEvent
from app.observability import push_trace as trace
from app.replicas import autocommit
from app.urls import JSON_ROOT_URL

log = logging.getLogger(__name__)
CHANNEL = "rw:events"  # Redis pub/sub channel
PG_CHANNEL = "readwire_events"  # PostgreSQL LISTEN/NOTIFY channel (Redis unreachable)
_FETCH = 500  # rows per fetch query
_CARRIED = 100  # at most this many events ride in a PUBLISH (more: the highest id, and a fetch)
_PLACEHOLDER = JSON_ROOT_URL[1:]  # ROOT_URL inside a JSON string (app/push/events.py), without its quote


class InvalidPosition(ValueError):
    """A Last-Event-ID this server did not issue (malformed, tampered)."""


class PositionCodec:
    """Signed stream positions: base64url(version | event id) + a truncated HMAC-SHA256, with a
    key derived from SECRET_KEY apart from the cursors' (a position is not a page cursor)."""

    _HEAD = struct.Struct(">Bq")
    _MAC = 12

    def __init__(self, secret: str) -> None:
        self._key = hashlib.sha256(b"readwire/event-position/v1:" + secret.encode()).digest()

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()[: self._MAC]

    def encode(self, position: int) -> str:
        payload = self._HEAD.pack(1, position)
        return base64.urlsafe_b64encode(payload + self._mac(payload)).rstrip(b"=").decode()

    def decode(self, token: str) -> int:
        if not token or len(token) > 64:
            raise InvalidPosition()
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except ValueError:
            raise InvalidPosition() from None
        payload, mac = raw[: self._HEAD.size], raw[self._HEAD.size :]
        if len(raw) != self._HEAD.size + self._MAC or not hmac.compare_digest(mac, self._mac(payload)):
            raise InvalidPosition()
        version, position = self._HEAD.unpack(payload)
        if version != 1 or position < 0:
            raise InvalidPosition()
        return int(position)


@dataclass(frozen=True, slots=True)
class Event:
    id: int
    scopes: frozenset[str]
    frame: bytes  # the whole SSE message (id, event, data), built once per process


@dataclass(eq=False, slots=True)
class Tap:
    """A waiting stream the hub writes to itself (Hub.park): the connection's socket under gunicorn's
    gevent worker (non-blocking; written with os.write, which never yields to another greenlet), how
    gunicorn frames the body (chunked for HTTP/1.1), and the stream's state, which the hub advances as
    the stream's own loop would (app/push/streams.py)."""

    fd: int
    chunked: bool
    scope: str
    root: bytes  # replaces the ROOT_URL placeholder in post URLs (JSON-escaped; b"": none)
    heartbeat: float
    cursor: int = 0  # the stream's position: every event up to it was given or is out of scope
    told: int = 0  # the position the client last received
    next_beat: float = 0.0  # monotonic time of the next heartbeat
    remainder: bytes = b""  # the unsent end of a message the hub began: the stream sends it first
    failed: bool = False  # the client is gone (a write failed)
    wake: threading.Event = field(default_factory=threading.Event)


def redis_client(
    config: dict[str, Any], *, timeout: float | None = None, size: int | None = None
) -> redis.Redis | None:
    """A client on the app's Redis primary (REDIS_URL, or found through REDIS_SENTINELS), its
    connections checked like the page cache's (app/cache/discovery.py), so push follows a
    failover too; None without Redis."""
    target = RedisTarget.from_config(config)
    if target is None:
        return None
    wait = float(config["CACHE_TIMEOUT"]) if timeout is None else timeout
    pool = target.pool(
        max_connections=int(config["CACHE_POOL_SIZE"]) if size is None else size,
        pool_wait=float(config["CACHE_POOL_WAIT"]),
        timeout=wait,
    )
    return redis.Redis(connection_pool=pool)


def frame(codec: PositionCodec, event_id: int, kind: str, data: str) -> bytes:
    return f"id: {codec.encode(event_id)}\nevent: {kind}\ndata: {data}\n\n".encode()


class Hub:
    """The ring of recent events and the threads (greenlets under gevent) that fill it."""

    def __init__(self, engine: Engine, codec: PositionCodec, config: dict[str, Any]) -> None:
        self.engine = engine
        self.codec = codec
        self.redis_url: str | None = config.get("REDIS_URL") or config.get("REDIS_SENTINELS") or None
        self.config = config
        self.ring_size = int(config["SSE_RING"])
        self.poll_interval = float(config["SSE_POLL_INTERVAL"])
        self.replay_max = int(config["SSE_REPLAY_MAX"])
        self.cond = threading.Condition()  # guards the ring: _ids, _events, base, last
        # Set, then replaced by a fresh Event, each time `last` moves: one broadcast wakes every
        # stream waiting on it. Not cond.wait()/notify_all(): each waiter it wakes must re-take the
        # condition's lock before it returns, one after another (a microbenchmark on a busy core:
        # 250 gevent waiters all running again after 9.6 ms, against 5.4 ms with an Event; the
        # rest of a fan-out is each stream's write).
        self.changed = threading.Event()
        self.wake = threading.Event()
        self._ids: list[int] = []
        self._events: list[Event] = []
        self.base = 0  # the ring holds every event with base < id <= last
        self.last = 0
        self._started = False
        self._start_lock = threading.Lock()
        self.stopped = threading.Event()
        self.housekeeping: list[Any] = []  # callables run by the fetcher at each wake (stream leases)
        self._taps: set[Tap] = set()  # parked streams (guarded by `cond`)
        self._inbox: list[list[Any]] = []  # events rings carried, not yet appended
        self._must_fetch = False  # a ring without events (or one whose events did not follow on)
        self._woke = 0.0  # when the fetcher last woke (PUSH_TRACE only)

    # --- lifecycle ----------------------------------------------------------------------------
    def ensure_started(self) -> None:
        """Start on the first stream: the head position, then the fetcher and the subscribers."""
        if self._started:
            return
        with self._start_lock:
            if self._started:
                return
            self.base = self.last = self.head()
            self._spawn(self._fetch_loop, "push-fetch")
            trace.start_monitors()
            if self.redis_url:
                self._spawn(self._redis_loop, "push-redis")
            if self.engine.dialect.name == "postgresql":
                self._spawn(self._pg_loop, "push-listen")
            self._started = True

    @staticmethod
    def _spawn(target: Any, name: str) -> None:
        threading.Thread(target=target, name=name, daemon=True).start()

    def stop(self) -> None:
        """End the hub's threads within a second or so (tests; a worker just exits)."""
        self.stopped.set()
        self.wake.set()

    @property
    def reader(self) -> Engine:
        """The engine in autocommit: a read is then one round trip (no BEGIN/ROLLBACK around it),
        one statement a snapshot of its own (app/replicas.py: read_only)."""
        return autocommit(self.engine)

    def head(self) -> int:
        with self.reader.connect() as conn:
            return int(conn.execute(select(func.coalesce(func.max(PostEvent.id), 0))).scalar_one())

    def prune(self, retention: float) -> int:
        """Delete events older than `retention` s (a stream resuming from one gets `reset`)."""
        cutoff = datetime.now(UTC) - timedelta(seconds=retention)
        with self.engine.begin() as conn:
            return int(conn.execute(delete(PostEvent).where(PostEvent.created_at < cutoff)).rowcount or 0)

    def prune_forever(self, retention: float, every: float) -> None:
        """A worker's pruning loop (gunicorn.conf.py): one DELETE every `every` s. Never raises."""
        while not self.stopped.wait(every):
            try:
                self.prune(retention)
            except Exception as exc:
                log.warning("push: pruning events failed: %s", type(exc).__name__)

    # --- filling --------------------------------------------------------------------------------
    def poke(self) -> None:
        """A ring without events: the fetcher reads the rows after its last id."""
        self._must_fetch = True
        self.wake.set()

    def ring(self, batch: list[Any]) -> None:
        """A ring with the events of one commit, [id, kind, scopes, data] in id order. Before the
        first stream the hub holds nothing (it starts from the head)."""
        if self._started:
            self._inbox.append(batch)
            self.wake.set()

    def _fetch_loop(self) -> None:
        while not self.stopped.is_set():
            rung = self.wake.wait(self.poll_interval)
            self.wake.clear()
            if trace.ON:
                self._woke = time.time()
            if self.stopped.is_set():
                return
            inbox, self._inbox = self._inbox, []
            must_fetch = self._must_fetch or not rung  # not rung: the periodic sweep
            self._must_fetch = False
            try:
                for batch in sorted(inbox, key=lambda b: int(b[0][0])):  # writers' rings may cross
                    if not self.offer(batch):
                        must_fetch = True
                if must_fetch:
                    self.fetch()
                for task in self.housekeeping:
                    task()
            except Exception as exc:  # the next ring or sweep retries; the loop must never die
                log.warning("push fetch failed: %s", type(exc).__name__)
                time.sleep(min(1.0, self.poll_interval))

    def fetch(self) -> int:
        """Append every committed event after `last` to the ring; how many were appended."""
        appended = 0
        while True:
            with self.reader.connect() as conn:
                rows = conn.execute(
                    select(PostEvent.id, PostEvent.kind, PostEvent.scopes, PostEvent.data)
                    .where(PostEvent.id > self.last)
                    .order_by(PostEvent.id)
                    .limit(_FETCH)
                ).all()
            if not rows:
                return appended
            events = [self._event(r.id, r.kind, r.scopes, r.data) for r in rows]
            with self.cond:
                appended += self._append([e for e in events if e.id > self.last])  # a ring's may be in
            if len(rows) < _FETCH:
                return appended

    def offer(self, batch: list[Any]) -> bool:
        """Append the events a ring carried if they follow on from `last` (ids last+1, last+2, ...:
        then no committed event can be missing before them); False when they do not (the caller
        fetches). Events the ring already holds are skipped."""
        with self.cond:
            fresh = [row for row in batch if int(row[0]) > self.last]
            expected = self.last + 1
            for row in fresh:
                if int(row[0]) != expected:
                    return False
                expected += 1
            if fresh:
                self._append([self._event(int(r[0]), r[1], r[2], r[3]) for r in fresh])
        return True

    def _event(self, event_id: int, kind: str, scopes: str, data: str) -> Event:
        return Event(event_id, frozenset(scopes.split()), frame(self.codec, event_id, kind, data))

    def _append(self, events: list[Event]) -> int:
        """Add events after `last` to the ring and wake the streams (call with `cond` held)."""
        if not events:
            return 0
        self._ids.extend(e.id for e in events)
        self._events.extend(events)
        self.last = events[-1].id
        if len(self._ids) > 2 * self.ring_size:
            cut = len(self._ids) - self.ring_size
            self.base = self._ids[cut - 1]
            del self._ids[:cut], self._events[:cut]
        changed, self.changed = self.changed, threading.Event()  # after `last` moved
        self._deliver()
        changed.set()
        return len(events)

    def _subscriber(self) -> redis.Redis:
        """One connection for the subscription, on the current primary (re-made on every retry)."""
        client = redis_client(self.config, timeout=5.0, size=1)
        assert client is not None
        return client

    def _redis_loop(self) -> None:
        assert self.redis_url is not None
        while not self.stopped.is_set():
            try:
                client = self._subscriber()
                with client.pubsub() as pubsub:
                    pubsub.subscribe(CHANNEL)
                    while not self.stopped.is_set():
                        # Any message rings, the subscribe confirmation too: catch up after a reconnect.
                        message = pubsub.get_message(timeout=1.0)
                        if message is not None:
                            batch = _carried(message)
                            trace.record("msg", last=int(batch[-1][0]) if batch else None)
                            if batch:
                                self.ring(batch)
                            else:
                                self.poke()
            except Exception as exc:
                log.warning("push: Redis subscription lost (%s); retrying", type(exc).__name__)
                self.stopped.wait(1.0)

    def _pg_loop(self) -> None:
        import psycopg

        dsn = self.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        while not self.stopped.is_set():
            try:
                with psycopg.connect(dsn, autocommit=True) as conn:
                    conn.execute(f"LISTEN {PG_CHANNEL}")
                    self.poke()
                    while not self.stopped.is_set():
                        for _notify in conn.notifies(timeout=1.0):
                            self.poke()
            except Exception as exc:
                log.warning("push: LISTEN connection lost (%s); retrying", type(exc).__name__)
                self.stopped.wait(1.0)

    def _deliver(self) -> None:
        """Write the events after each parked stream's position to its socket (call with `cond`
        held, the ring just extended): one write each, the message built once per position, scope
        and framing. A stream is woken instead when its position left the ring, when its socket
        took only part of the message (the stream sends the rest itself, before anything else) or
        when the write failed (the client is gone)."""
        if not self._taps:
            return
        now = time.monotonic()
        messages: dict[tuple[int, str, bytes, bool], bytes] = {}
        started, first, written = (time.time(), 0.0, 0) if trace.ON else (0.0, 0.0, 0)
        for tap in list(self._taps):
            if tap.cursor < self.base:
                self._release(tap)
                continue
            key = (tap.cursor, tap.scope, tap.root, tap.chunked)
            message = messages.get(key)
            if message is None:
                start = bisect_right(self._ids, tap.cursor)
                body = b"".join(e.frame for e in self._events[start:] if tap.scope in e.scopes)
                if body and tap.root and _PLACEHOLDER in body:
                    body = body.replace(_PLACEHOLDER, tap.root)
                message = b"%X\r\n%s\r\n" % (len(body), body) if body and tap.chunked else body
                messages[key] = message
            tap.cursor = self.last
            if not message:
                continue  # events of other scopes only: the next heartbeat carries the position
            try:
                sent = os.write(tap.fd, message)
            except BlockingIOError:
                sent = 0
            except OSError:
                tap.failed = True
                self._release(tap)
                continue
            tap.told = tap.cursor
            tap.next_beat = now + tap.heartbeat
            if trace.ON:
                written += 1
                first = first or time.time()
            if sent < len(message):
                tap.remainder = message[sent:]
                self._release(tap)
        if trace.ON:
            trace.record("deliver", last=self.last, woke=self._woke, began=started, first=first, written=written)

    def _release(self, tap: Tap) -> None:
        self._taps.discard(tap)
        tap.wake.set()

    # --- reading (streams) ----------------------------------------------------------------------
    def park(self, tap: Tap, timeout: float) -> None:
        """Wait up to `timeout` s while the hub writes the stream's events itself (_deliver);
        return at once if events after `tap.cursor` are already in the ring, early if the stream
        must act (see _deliver). The stream's loop then reads its state back from `tap`."""
        with self.cond:
            if self.last > tap.cursor:
                return
            tap.wake.clear()
            self._taps.add(tap)
        try:
            tap.wake.wait(timeout)
        finally:
            with self.cond:
                self._taps.discard(tap)

    def wait(self, cursor: int, timeout: float) -> None:
        """Return once events after `cursor` are in the ring, or after `timeout` s."""
        changed = self.changed  # taken before `last` is read: a fetch in between has set it
        if self.last <= cursor:
            changed.wait(timeout)

    def after(self, cursor: int) -> list[Event] | None:
        """Events after `cursor` (call with `cond` held); None when the ring no longer reaches back
        to `cursor` (the stream then reads the database)."""
        if cursor < self.base:
            return None
        return self._events[bisect_right(self._ids, cursor) :]

    def replay(self, position: int) -> tuple[list[Event], tuple[int, str] | None]:
        """Events after `position` from the database: (events, None), or ([], (head, reason)) when
        the stream must be reset: the position is unknown here, or more than SSE_REPLAY_MAX events
        were missed (keyset on the primary key, at most SSE_REPLAY_MAX + 2 rows read)."""
        with self.reader.connect() as conn:
            rows = conn.execute(
                select(PostEvent.id, PostEvent.kind, PostEvent.scopes, PostEvent.data)
                .where(PostEvent.id >= position)
                .order_by(PostEvent.id)
                .limit(self.replay_max + 2)
            ).all()
            known = position == 0 or (bool(rows) and rows[0].id == position)
            missed = [r for r in rows if r.id > position]
            if not known or len(missed) > self.replay_max:
                head = int(conn.execute(select(func.coalesce(func.max(PostEvent.id), 0))).scalar_one())
                return [], (head, "unknown position" if not known else "too many missed")
        return [self._event(r.id, r.kind, r.scopes, r.data) for r in missed], None


def _carried(message: dict[str, Any]) -> list[Any] | None:
    """The events a PUBLISH carried ({"e": [[id, kind, scopes, data], ...]}); None for any other
    message (a bare position, a subscribe confirmation): the hub fetches."""
    data = message.get("data")
    if message.get("type") != "message" or not isinstance(data, bytes) or not data.startswith(b"{"):
        return None
    try:
        batch = orjson.loads(data)["e"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None
    return batch if isinstance(batch, list) and batch else None


@dataclass(slots=True)
class Doorbell:
    """What a commit rings (Publisher.doorbell): the store PUBLISHes it with the write's cache bump
    when it can (app/cache/store.py: Announcement), the Publisher otherwise."""

    position: int  # the highest event id the commit made durable
    batch: list[Any]  # its events, [id, kind, scopes, data] in id order
    carried: list[Any] | None  # the ones the message carries (None: too many; the hubs fetch)
    message: bytes
    channel: str = CHANNEL
    sent: bool = False  # PUBLISHed by the page cache's store


class Publisher:
    """Rings every process's doorbell after a commit that wrote events: Redis PUBLISH, or
    PostgreSQL NOTIFY when Redis cannot take it; and this process's hub directly."""

    def __init__(self, hub: Hub, config: dict[str, Any]) -> None:
        self.hub = hub
        self.client = redis_client(config)
        self.breaker = CircuitBreaker(config["CACHE_BREAKER_THRESHOLD"], config["CACHE_BREAKER_COOLDOWN"])

    @staticmethod
    def doorbell(position: int, batch: list[Any]) -> Doorbell:
        """A commit's doorbell: `batch`, its events, [id, kind, scopes, data] in id order, carried in
        the message (up to _CARRIED) so that no process has to read them back."""
        carried = batch if batch and len(batch) <= _CARRIED and batch[-1][0] == position else None
        message = orjson.dumps({"p": position, "e": carried}) if carried else str(position).encode()
        return Doorbell(position, batch, carried, message)

    def publish(self, bell: Doorbell) -> str:
        """How the doorbell was rung: redis, postgres or local (this process only). Usually the
        page cache's store has PUBLISHed it already, with the write's bump (`bell.sent`). The other
        processes' first: once rung, this process's hub writes to all its streams in one pass of the
        gevent loop, and a PUBLISH still waiting for its reply waited for all of it (traced: bumped ->
        published p50 131 ms against 8 ms, 270 streams, a busy machine)."""
        try:
            return "redis" if bell.sent else self._ring_others(bell)
        finally:
            if bell.carried:
                self.hub.ring(bell.carried)
            else:
                self.hub.poke()
            trace.mark("rung")

    def _ring_others(self, bell: Doorbell) -> str:
        position = bell.position
        if self.client is not None and self.breaker.allow():
            try:
                message = bell.message
                trace.mark("publish_sent")
                self.client.publish(CHANNEL, message)
                trace.mark("published")
                self.breaker.success()
                return "redis"
            except (redis.RedisError, OSError) as exc:
                self.breaker.failure()
                log.warning("push: PUBLISH failed (%s); notifying through PostgreSQL", type(exc).__name__)
        if self.hub.engine.dialect.name != "postgresql":
            return "local"  # the embedded default: one process, its hub is poked
        try:
            with self.hub.engine.connect() as conn:
                notify = text("SELECT pg_notify(:channel, :position)")
                conn.execute(notify, {"channel": PG_CHANNEL, "position": str(position)})
                conn.commit()
            return "postgres"
        except Exception as exc:  # the writers' commit stands; streams catch up at the next sweep
            log.warning("push: NOTIFY failed (%s); streams catch up within SSE_POLL_INTERVAL", type(exc).__name__)
            return "local"
