"""WebSub (W3C) for feed readers: the feeds advertise a hub (WEBSUB_HUB_URL), and every feed a
write changed is announced to it (`hub.mode=publish`, `hub.url` = the feed's URL).

The feeds a write changed are the scopes of its events (app/push/events.py: the global feed, the
category, tag and author feeds the post was or is in), in both formats (JSON Feed and Atom). One
outbox row per feed URL is written in the write's transaction, so a rollback announces nothing
and a commit cannot lose its announcement. The write never waits for the hub: after the commit
it only wakes the drain loop (one greenlet per worker, gunicorn.conf.py), which POSTs each URL
once however many rows name it, deletes the rows the hub took (2xx), and keeps the others with
an exponential backoff (WEBSUB_RETRY_BASE s, doubled per attempt, at most 10 minutes) while the
hub is unreachable; once one URL finds the hub unreachable, the batch's others are backed off
untried (a silent hub costs a pass one WEBSUB_TIMEOUT while the rows stay locked, not one per
URL). Rows are taken FOR UPDATE SKIP LOCKED, so two workers never announce the same row at once.
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from flask import Flask
from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Engine

from app.http import API_PREFIX
from app.models import WebSubOutbox

log = logging.getLogger(__name__)
_FORMATS = ("json", "atom")
_MAX_BACKOFF = 600.0
_BATCH = 200


def feed_paths(scopes: Iterable[str]) -> list[str]:
    """The syndication feeds (paths under the API root) that show the posts of these scopes."""
    paths = []
    for scope in sorted(set(scopes)):
        kind, _, key = scope.partition(":")
        base = "/feed" if scope == "all" else {"category": "/categories", "tag": "/tags", "author": "/authors"}[kind]
        stem = base if scope == "all" else f"{base}/{key}/feed"
        paths += [f"{API_PREFIX}{stem}.{fmt}" for fmt in _FORMATS]
    return paths


class WebSub:
    """One app's hub announcements: the outbox rows (in the write's transaction), the drain."""

    def __init__(self, engine: Engine, config: dict[str, Any]) -> None:
        self.engine = engine
        self.hub_url: str = config["WEBSUB_HUB_URL"]
        self.public_base: str = config["PUBLIC_BASE_URL"]
        self.timeout = float(config["WEBSUB_TIMEOUT"])
        self.retry_base = float(config["WEBSUB_RETRY_BASE"])
        self.wake = threading.Event()

    @property
    def enabled(self) -> bool:
        return bool(self.hub_url)

    def root(self) -> str | None:
        """The API's public root for topic URLs: PUBLIC_BASE_URL, else the writing request's."""
        if self.public_base:
            return self.public_base
        from flask import has_request_context

        if not has_request_context():
            return None
        from app.http.respond import root_url

        return root_url()

    def add(self, conn: Any, scopes: Iterable[str]) -> int:
        """Outbox rows for the feeds of `scopes`, in the caller's transaction; how many."""
        root = self.root()
        if root is None:
            log.warning("websub: no PUBLIC_BASE_URL and no request: the hub is not told of this write")
            return 0
        topics = [root + path for path in feed_paths(scopes)]
        if topics:
            conn.execute(insert(WebSubOutbox).values([{"topic": topic} for topic in topics]))
        return len(topics)

    def poke(self) -> None:
        self.wake.set()

    def announce(self, topic: str) -> bool | None:
        """POST one publish notification: True when the hub took it (2xx), False when it answered
        otherwise, None when it could not be reached (refused, timed out)."""
        body = urlencode({"hub.mode": "publish", "hub.url": topic}).encode()
        req = urllib.request.Request(
            self.hub_url, data=body, headers={"Content-Type": "application/x-www-form-urlencoded"}
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as response:
                return 200 <= int(response.status) < 300
        except urllib.error.HTTPError as exc:
            log.warning("websub: the hub answered %d for %s", exc.code, topic)
            return False
        except (urllib.error.URLError, OSError) as exc:
            log.warning("websub: hub unreachable (%s)", type(exc).__name__)
            return None

    def drain(self) -> tuple[int, int]:
        """Announce every due row: (feed URLs the hub took, URLs left for a retry)."""
        if not self.enabled:
            return 0, 0
        taken = failed = 0
        while True:
            now = datetime.now(UTC)
            with self.engine.begin() as conn:
                due = (
                    select(WebSubOutbox.id, WebSubOutbox.topic, WebSubOutbox.attempts)
                    .where(WebSubOutbox.next_attempt_at <= now)
                    .order_by(WebSubOutbox.id)
                    .limit(_BATCH)
                )
                if conn.dialect.name == "postgresql":
                    due = due.with_for_update(skip_locked=True)
                rows = conn.execute(due).all()
                if not rows:
                    return taken, failed
                by_topic: dict[str, list[Any]] = {}
                for row in rows:
                    by_topic.setdefault(row.topic, []).append(row)
                done: list[int] = []
                reachable = True
                for topic, same in by_topic.items():
                    # Once the hub could not be reached, the batch's other URLs are backed off
                    # without trying: a silent hub costs one timeout per pass, not one per URL
                    # (the rows stay locked, and a pooled connection held, while this runs).
                    answer = self.announce(topic) if reachable else None
                    if answer:
                        done += [row.id for row in same]
                        taken += 1
                        continue
                    reachable = reachable and answer is not None
                    failed += 1
                    for row in same:
                        delay = min(_MAX_BACKOFF, self.retry_base * 2**row.attempts)
                        conn.execute(
                            update(WebSubOutbox)
                            .where(WebSubOutbox.id == row.id)
                            .values(attempts=row.attempts + 1, next_attempt_at=now + timedelta(seconds=delay))
                        )
                if done:
                    conn.execute(delete(WebSubOutbox).where(WebSubOutbox.id.in_(done)))
            if len(rows) < _BATCH or not done or not reachable:
                return taken, failed

    def drain_forever(self, app: Flask, tick: float, stop: threading.Event | None = None) -> None:
        """A worker's drain loop: at once when a commit wrote rows, and every `tick` s (retries,
        rows another worker left), until `stop` is set. Never raises."""
        stop = stop or threading.Event()
        while not stop.is_set():
            self.wake.wait(tick)
            self.wake.clear()
            if stop.is_set():
                return
            try:
                with app.app_context():
                    self.drain()
            except Exception as exc:  # the next tick retries; the loop must never die
                log.warning("websub drain failed: %s", type(exc).__name__)
                time.sleep(tick)
