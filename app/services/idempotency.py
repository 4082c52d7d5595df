"""Idempotency keys in SQL (the IETF httpapi Idempotency-Key draft, as Stripe does it).

A keyed write runs in one transaction that first takes a transaction-scoped lock on (author,
key) and looks the key up:

- held by another transaction: that request is still in flight (KeyInFlight, 409);
- found, same request: its first answer is replayed and nothing is written;
- found, another request (method, path or body): KeyReused (422);
- absent (or expired): the write runs, and its answer is recorded in the same transaction,
  just before its commit (the `before_commit` listener, fed by `record_answer`).

So a key is used exactly when its write committed: a retry after an answer was lost (a worker
killed between the commit and the response) gets the first answer again, and a write that
failed or rolled back left nothing behind, so the key can be retried as it is. Keys are kept
IDEMPOTENCY_TTL (24 h) per author, then swept (`purge_expired`).

On PostgreSQL the lock is an advisory transaction lock (`pg_try_advisory_xact_lock`), released by
the commit or rollback, and by the server if the process dies. The embedded SQLite default (one
process) keeps the keys in flight in a set instead.
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from flask import Flask
from sqlalchemy import delete, event, func, insert, select
from sqlalchemy.orm import Session

from app.exceptions import KeyInFlight, KeyReused
from app.extensions import db
from app.models import IdempotencyKey
from app.models.types import utcnow

log = logging.getLogger(__name__)
_CLAIM = "idempotency.claim"  # session.info keys
_ANSWER = "idempotency.answer"
_LOCAL_IN_FLIGHT: set[tuple[int, str]] = set()  # SQLite only
_LOCAL_LOCK = threading.Lock()

# An answer as it will be sent: status, body bytes, Location.
Rendered = tuple[int, bytes, str | None]


@dataclass(frozen=True, slots=True)
class Stored:
    status: int
    body: bytes
    location: str | None


@dataclass(frozen=True, slots=True)
class Claim:
    """A key this transaction holds: what to record when the write commits."""

    author_id: int
    key: str
    fingerprint: bytes
    ttl: timedelta
    render: Callable[[Any], Rendered]  # the view's answer -> what the client is sent
    local: bool  # held in _LOCAL_IN_FLIGHT (SQLite), released by `release`


def fingerprint(method: str, path: str, body: bytes) -> bytes:
    return hashlib.sha256(f"{method} {path}\n".encode() + body).digest()


def _lock_id(author_id: int, key: str) -> Any:
    # 64-bit hash of the pair: a collision can only make a request wait for another's 409.
    return func.hashtextextended(f"idempotency:{author_id}:{key}", 0)


def lock_id(author_id: int, key: str) -> int:
    """The advisory lock a request with this key holds (tests take it to play a request in flight)."""
    return int(db.session.execute(select(_lock_id(author_id, key))).scalar_one())


def _take(author_id: int, key: str) -> bool:
    """This transaction's hold on (author, key): False while another request has it."""
    if db.session.get_bind().dialect.name == "postgresql":
        return bool(db.session.execute(select(func.pg_try_advisory_xact_lock(_lock_id(author_id, key)))).scalar_one())
    with _LOCAL_LOCK:
        if (author_id, key) in _LOCAL_IN_FLIGHT:
            return False
        _LOCAL_IN_FLIGHT.add((author_id, key))
        return True


def begin(author_id: int, key: str, print_: bytes, ttl: timedelta, render: Callable[[Any], Rendered]) -> Stored | None:
    """Hold the key for this request's transaction: the first answer if the key was used already
    (same request), None when this request is to run (its answer is then recorded at commit)."""
    if not _take(author_id, key):
        raise KeyInFlight()
    local = db.session.get_bind().dialect.name != "postgresql"
    try:
        row = db.session.execute(
            select(IdempotencyKey).where(IdempotencyKey.author_id == author_id, IdempotencyKey.key == key)
        ).scalar_one_or_none()
        if row is not None and _aware(row.expires_at) <= utcnow():
            db.session.delete(row)  # expired: the key starts afresh
            db.session.flush()
            row = None
        if row is not None:
            if row.fingerprint != print_:
                raise KeyReused()
            return Stored(row.status, row.body, row.location)
    except BaseException:
        if local:
            _release_local(author_id, key)
        raise
    if row is not None and local:
        _release_local(author_id, key)
    db.session.info[_CLAIM] = Claim(author_id, key, print_, ttl, render, local)
    return None


def record_answer(answer: Any) -> None:
    """A write service's answer, just before its commit: kept with the key the request holds, in
    the same transaction (nothing happens for a request without a key)."""
    if _CLAIM in db.session.info:
        db.session.info[_ANSWER] = answer


def release() -> None:
    """The request is over: forget its claim (the transaction's end released the lock)."""
    claim: Claim | None = db.session.info.pop(_CLAIM, None)
    db.session.info.pop(_ANSWER, None)
    if claim is not None and claim.local:
        _release_local(claim.author_id, claim.key)


def _release_local(author_id: int, key: str) -> None:
    with _LOCAL_LOCK:
        _LOCAL_IN_FLIGHT.discard((author_id, key))


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=utcnow().tzinfo)  # SQLite: naive UTC


def _before_commit(session: Session) -> None:
    claim: Claim | None = session.info.get(_CLAIM)
    if claim is None or _ANSWER not in session.info:
        return
    status, body, location = claim.render(session.info.pop(_ANSWER))
    now = utcnow()
    session.execute(
        insert(IdempotencyKey).values(
            author_id=claim.author_id,
            key=claim.key,
            fingerprint=claim.fingerprint,
            status=status,
            body=body,
            location=location,
            created_at=now,
            expires_at=now + claim.ttl,
        )
    )


def purge_expired(now: datetime | None = None) -> int:
    """Delete every key past its expiry; returns how many (committed)."""
    result = db.session.execute(delete(IdempotencyKey).where(IdempotencyKey.expires_at <= (now or utcnow())))
    db.session.commit()
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def sweep_forever(app: Flask, interval: float) -> None:
    """A worker's sweep loop: purge expired keys every `interval` s (with jitter, so workers
    started together spread out). Never raises."""
    while True:
        time.sleep(interval * random.uniform(0.5, 1.5))
        try:
            with app.app_context():
                removed = purge_expired()
                db.session.remove()
            if removed:
                log.info("idempotency keys swept: %d expired", removed)
        except Exception as exc:  # the next round retries; the loop must never die
            log.warning("idempotency key sweep failed: %s", type(exc).__name__)


def listen() -> None:
    """Record answers at commit in every session (once per process, like the invalidation listeners)."""
    from flask_sqlalchemy.session import Session as session_class

    if not event.contains(session_class, "before_commit", _before_commit):
        event.listen(session_class, "before_commit", _before_commit)
