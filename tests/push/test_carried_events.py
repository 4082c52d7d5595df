"""The doorbell carries the committed events (app/push/hub.py): a hub appends them as they come
when they follow on from the last id it holds, with no query; otherwise (ids in between that may be
another writer's still on their way, or never committed) it reads the rows from the database."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
from flask import Flask

from app.extensions import push
from app.push.hub import CHANNEL, Hub
from tests.push.conftest import WAIT, a_category, an_author, create, open_stream

STREAM = "/api/v1/stream"


def _count_fetches(hub: Hub, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many events each fetch appended from here on (a catch-up that finds nothing appends 0)."""
    calls: list[int] = []
    fetch = hub.fetch

    def counted() -> int:
        appended = fetch()
        calls.append(appended)
        return appended

    monkeypatch.setattr(hub, "fetch", counted)
    return calls


def test_another_process_streams_a_write_from_the_events_the_publish_carried_without_a_query(
    make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    reader, writer = make_app(), make_app()  # two hubs, as two workers have
    author, category = an_author(writer), a_category(writer)
    stream = open_stream(reader, STREAM)
    try:
        stream.messages.get(timeout=WAIT)  # the opening: the reader's hub has started
        hub = push.state(reader).hub
        client = redis.Redis.from_url(reader.config["REDIS_URL"])
        deadline = time.monotonic() + WAIT
        while dict(client.pubsub_numsub(CHANNEL)).get(CHANNEL.encode(), 0) < 1:  # the reader's hub listens
            assert time.monotonic() < deadline, "the reader's hub never subscribed"
            time.sleep(0.02)
        client.close()
        fetches = _count_fetches(hub, monkeypatch)
        ids = [create(writer, author, f"Carried {n}", category) for n in range(3)]
        got = [stream.next_event() for _ in ids]
        assert [json.loads(m.data)["post"]["id"] for m in got] == ids
        assert sum(fetches) == 0, "the reader read back events the PUBLISH carried"
    finally:
        stream.close()


def _row(hub: Hub, event_id: int) -> list[Any]:
    data = json.dumps({"type": "post.updated", "post": {"id": 1}, "written_at": "2026-01-01T00:00:00.000Z"})
    return [event_id, "post.updated", "all", data]


def test_carried_events_that_do_not_follow_on_are_refused_for_a_fetch(make_app: Callable[..., Flask]) -> None:
    app = make_app()
    stream = open_stream(app, STREAM)
    try:
        stream.messages.get(timeout=WAIT)
        hub = push.state(app).hub
        last = hub.last
        assert not hub.offer([_row(hub, last + 2)]), "an id in between may still commit: fetch"
        assert hub.last == last
        assert hub.offer([_row(hub, last + 1), _row(hub, last + 2)])
        assert hub.last == last + 2
        assert hub.offer([_row(hub, last + 1), _row(hub, last + 2)]), "already held: nothing to do"
        with hub.cond:
            held = hub.after(last)
        assert held is not None and [e.id for e in held] == [last + 1, last + 2]
    finally:
        stream.stop.set()
        stream.close()
