"""Server-Sent Events on the real PostgreSQL and Redis: events after commit only, signed resumable
ids, replay on reconnect without gap or duplicate, reset past the bound, heartbeats, caps,
fan-out between processes by Redis pub/sub, and by LISTEN/NOTIFY when Redis is away."""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable

import pytest
import redis
from flask import Flask
from sqlalchemy import text

from app.extensions import db, push
from app.models import Post
from devstack.servers import free_port
from tests.push.conftest import WAIT, a_category, an_author, create, delete, open_stream, retitle

STREAM = "/api/v1/stream"


def test_create_update_delete_are_pushed_with_signed_increasing_ids(make_app: Callable[..., Flask]) -> None:
    app = make_app()
    author, category = an_author(app), a_category(app)
    everything = open_stream(app, STREAM)
    scoped = open_stream(app, f"/api/v1/categories/{category}/stream")
    other = open_stream(app, "/api/v1/categories/no-such-thing-here/stream")
    try:
        assert everything.status == scoped.status == 200
        assert everything.headers["Content-Type"].startswith("text/event-stream")
        assert everything.headers["Cache-Control"] == "no-store"
        assert other.status == 404 and json.loads(other.body)["code"] == "not_found"
        post_id = create(app, author, "Pushed", category)
        retitle(app, author, post_id, "Pushed again")
        delete(app, author, post_id)
        for stream in (everything, scoped):
            got = [stream.next_event() for _ in range(3)]
            assert [m.event for m in got] == ["post.created", "post.updated", "post.deleted"]
            created, updated, deleted = (json.loads(m.data) for m in got)
            assert created["post"]["id"] == updated["post"]["id"] == post_id
            assert created["post"]["title"] == "Pushed" and created["post"]["category"] == category
            assert updated["post"]["title"] == "Pushed again"
            assert deleted["post"] == {"id": post_id}
            positions = [push.state(app).codec.decode(m.id or "") for m in got]
            assert positions == sorted(positions) and len(set(positions)) == 3
    finally:
        everything.close()
        scoped.close()


def test_a_pushed_post_url_is_spelled_as_the_api_spells_it_for_each_stream(make_app: Callable[..., Flask]) -> None:
    """The event row is written once; each stream gets the url with its own request's root, the
    same absolute url GET /api/v1/posts/{id} answers there (app/services/items.py:post_urls)."""
    app = make_app()
    author, category = an_author(app), a_category(app)
    here = open_stream(app, STREAM, {"Host": "api.example.test"})
    there = open_stream(app, STREAM, {"Host": "mirror.example.test:8443"})
    try:
        post_id = create(app, author, "Spelled", category)
        for stream, root in ((here, "http://api.example.test"), (there, "http://mirror.example.test:8443")):
            url = json.loads(stream.next_event().data)["post"]["url"]
            assert url == f"{root}/api/v1/posts/{post_id}"
            detail = app.test_client().get(f"/api/v1/posts/{post_id}", headers={"Host": root.split("//")[1]})
            assert detail.get_json()["url"] == url
    finally:
        here.close()
        there.close()
    site = make_app(PUBLIC_SITE_URL="https://www.example.test")
    stream = open_stream(site, STREAM)
    try:
        post_id = create(site, author, "On the site", category)
        post = json.loads(stream.next_event().data)["post"]
        assert post["url"] == f"https://www.example.test/posts/{post['slug']}"
    finally:
        stream.close()


def test_a_rolled_back_write_and_a_draft_push_nothing(make_app: Callable[..., Flask]) -> None:
    app = make_app()
    author, category = an_author(app), a_category(app)
    stream = open_stream(app, STREAM)
    try:
        with app.app_context():
            before = db.session.execute(text("SELECT count(*) FROM post_events")).scalar_one()
            post = db.session.get(Post, create(app, author, "Will be rolled back", category))
            assert post is not None
            post.title = "Rolled back"
            db.session.flush()  # the event rows would be written now...
            db.session.rollback()  # ...and are not
            assert db.session.execute(text("SELECT count(*) FROM post_events")).scalar_one() == before + 1
            db.session.remove()
        create(app, author, "A draft", category, status="draft")
        marker = create(app, author, "After the rollback", category)
        first = stream.next_event()
        assert json.loads(first.data)["post"]["title"] == "Will be rolled back"  # its create was committed
        second = stream.next_event()
        assert json.loads(second.data)["post"]["id"] == marker  # no rolled-back edit, no draft in between
    finally:
        stream.close()


def test_reconnecting_with_last_event_id_replays_the_missed_events_then_continues_live(
    make_app: Callable[..., Flask],
) -> None:
    app = make_app()
    author, category = an_author(app), a_category(app)
    first = open_stream(app, STREAM)
    seen = create(app, author, "Seen", category)
    got = first.next_event()
    assert json.loads(got.data)["post"]["id"] == seen
    first.close()
    missed = [create(app, author, f"Missed {i}", category) for i in range(3)]
    again = open_stream(app, STREAM, {"Last-Event-ID": got.id or ""})
    try:
        replayed = [json.loads(again.next_event().data)["post"]["id"] for _ in range(3)]
        assert replayed == missed
        live = create(app, author, "Live", category)
        assert json.loads(again.next_event().data)["post"]["id"] == live
        with pytest.raises(queue.Empty):
            again.next_event(timeout=1.0)  # nothing twice
    finally:
        again.close()


def test_reconnects_under_continuous_writes_lose_and_repeat_nothing(make_app: Callable[..., Flask]) -> None:
    """The seam: a writer commits all the time while the client drops and resumes its stream."""
    app = make_app()
    author, category = an_author(app), a_category(app)
    written: list[int] = []
    done = threading.Event()

    def writer() -> None:
        for i in range(40):
            written.append(create(app, author, f"Seam {i}", category))
            time.sleep(0.02)
        done.set()

    stream = open_stream(app, STREAM)
    thread = threading.Thread(target=writer)
    thread.start()
    received: list[int] = []
    last_id = None
    try:
        while not (done.is_set() and len(received) >= len(written)):
            try:
                message = stream.next_event(timeout=WAIT)
            except queue.Empty:
                break
            received.append(json.loads(message.data)["post"]["id"])
            last_id = message.id
            if len(received) % 5 == 0:  # drop the connection and resume from the last id seen
                stream.close()
                stream = open_stream(app, STREAM, {"Last-Event-ID": last_id or ""})
    finally:
        stream.close()
        thread.join(60)
    assert received == written


def test_too_many_missed_events_get_a_reset_at_the_head(make_app: Callable[..., Flask]) -> None:
    app = make_app(SSE_REPLAY_MAX=3)
    author, category = an_author(app), a_category(app)
    stream = open_stream(app, STREAM)
    create(app, author, "Seen", category)
    seen = stream.next_event()
    stream.close()
    for i in range(5):
        create(app, author, f"Missed {i}", category)
    again = open_stream(app, STREAM, {"Last-Event-ID": seen.id or ""})
    try:
        reset = again.next_event()
        assert reset.event == "reset" and json.loads(reset.data)["reason"] == "too many missed"
        with app.app_context():
            head = db.session.execute(text("SELECT max(id) FROM post_events")).scalar_one()
        assert push.state(app).codec.decode(reset.id or "") == head
        live = create(app, author, "After the reset", category)
        assert json.loads(again.next_event().data)["post"]["id"] == live
    finally:
        again.close()


def test_a_position_pruned_away_gets_a_reset(make_app: Callable[..., Flask]) -> None:
    app = make_app()
    author, category = an_author(app), a_category(app)
    stream = open_stream(app, STREAM)
    create(app, author, "Soon pruned", category)
    old = stream.next_event()
    stream.close()
    with app.app_context():
        db.session.execute(text("UPDATE post_events SET created_at = created_at - interval '30 days'"))
        db.session.commit()
        db.session.remove()
    assert push.state(app).hub.prune(retention=7 * 86400) >= 1
    again = open_stream(app, STREAM, {"Last-Event-ID": old.id or ""})
    try:
        reset = again.next_event()
        assert reset.event == "reset" and json.loads(reset.data)["reason"] == "unknown position"
    finally:
        again.close()


@pytest.mark.parametrize("header", ["nonsense", "AQAAAAAAAAAB" + "A" * 16, ""])
def test_a_last_event_id_this_server_did_not_issue_is_400(make_app: Callable[..., Flask], header: str) -> None:
    app = make_app()
    stream = open_stream(app, STREAM, {"Last-Event-ID": header})
    assert stream.status == 400
    problem = json.loads(stream.body)
    assert problem["code"] == "invalid_cursor" and "Last-Event-ID" in problem["errors"]
    assert stream.headers["Content-Type"].startswith("application/problem+json")


def test_streams_per_client_address_are_capped_with_429(make_app: Callable[..., Flask]) -> None:
    app = make_app(SSE_MAX_PER_CLIENT=2)
    first, second = open_stream(app, STREAM), open_stream(app, STREAM)
    try:
        refused = open_stream(app, STREAM)
        assert refused.status == 429 and json.loads(refused.body)["code"] == "rate_limited"
        assert int(refused.headers["Retry-After"]) >= 1
        another = make_app(SSE_MAX_PER_CLIENT=2)  # another worker counts the same leases (Redis)
        assert open_stream(another, STREAM).status == 429
    finally:
        first.close()
    third = open_stream(app, STREAM)  # a closed stream gives its slot back
    assert third.status == 200
    third.close()
    second.close()


def test_leases_of_open_streams_are_renewed_with_one_zadd_per_client_address(make_app: Callable[..., Flask]) -> None:
    """Leases outlive their streams' first minute only if renewed: every open stream's lease is
    pushed forward (one ZADD per address however many streams it holds), a released one is not
    brought back, and the address keys keep a TTL."""
    app = make_app()
    slots = push.state(app).slots
    client = redis.Redis.from_url(app.config["REDIS_URL"])
    try:
        first, second = slots.acquire("192.0.2.1"), slots.acquire("192.0.2.1")
        other, gone = slots.acquire("192.0.2.2"), slots.acquire("192.0.2.2")
        assert first and second and other and gone
        slots.release(gone)
        leases = {first: "192.0.2.1", second: "192.0.2.1", other: "192.0.2.2"}
        for token, address in leases.items():  # as if they were about to expire
            client.zadd(slots._key(address), {token: 1.0})
        zadds = _calls(client, "zadd")
        renewed_at = time.time()
        slots.renewed = 0.0  # due
        slots.renew()
        assert _calls(client, "zadd") - zadds == 2  # two addresses, three streams
        for token, address in leases.items():
            assert (client.zscore(slots._key(address), token) or 0) >= renewed_at + slots.lease - 1
            assert client.ttl(slots._key(address)) > 0
        assert client.zscore(slots._key("192.0.2.2"), gone) is None
    finally:
        for token in list(slots.active):
            slots.release(token)
        client.close()


def _calls(client: redis.Redis, command: str) -> int:
    stats = client.info("commandstats").get(f"cmdstat_{command}", {})
    return int(stats.get("calls", 0)) if isinstance(stats, dict) else 0


def test_heartbeats_keep_an_idle_stream_alive_and_carry_the_position_past_other_scopes(
    make_app: Callable[..., Flask],
) -> None:
    app = make_app()
    author, category = an_author(app), a_category(app)
    stream = open_stream(app, "/api/v1/authors/nobody_writes_here/stream")
    if stream.status == 404:  # the seed has no such author: use a tag nobody writes to
        stream = open_stream(app, "/api/v1/tags/" + _unused_tag(app) + "/stream")
    try:
        assert stream.status == 200
        opening = stream.messages.get(timeout=WAIT)
        assert opening.id is not None and opening.comments  # retry, a comment, the starting id
        started = time.monotonic()
        beat = stream.messages.get(timeout=WAIT)
        assert beat.comments == ["heartbeat"] and time.monotonic() - started < 5
        create(app, author, "Elsewhere", category)  # not in this stream's scope
        while True:
            message = stream.messages.get(timeout=WAIT)
            assert not message.event, "an event outside the stream's scope was sent"
            if message.id is not None:
                break  # a heartbeat moved the client's position past the other scope's event
        with app.app_context():
            head = db.session.execute(text("SELECT max(id) FROM post_events")).scalar_one()
        assert push.state(app).codec.decode(message.id) == head
    finally:
        stream.close()


def _unused_tag(app: Flask) -> str:
    with app.app_context():
        return str(db.session.execute(text("SELECT slug FROM tags ORDER BY post_count, id LIMIT 1")).scalar_one())


def test_any_process_streams_any_process_writes_through_redis(make_app: Callable[..., Flask]) -> None:
    reader, writer = make_app(), make_app()  # two apps: two hubs, as two workers have
    author, category = an_author(writer), a_category(writer)
    stream = open_stream(reader, STREAM)
    try:
        stream.messages.get(timeout=WAIT)  # opening: the reader's hub is subscribed
        started = time.monotonic()
        post_id = create(writer, author, "From another process", category)
        got = stream.next_event()
        assert json.loads(got.data)["post"]["id"] == post_id
        assert time.monotonic() - started < 5  # the doorbell, not the 60 s sweep
    finally:
        stream.close()


def test_with_redis_away_the_doorbell_goes_through_postgresql(make_app: Callable[..., Flask]) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    reader, writer = make_app(REDIS_URL=dead), make_app(REDIS_URL=dead)
    author, category = an_author(writer), a_category(writer)
    stream = open_stream(reader, STREAM)
    try:
        stream.messages.get(timeout=WAIT)
        time.sleep(0.5)  # the reader's LISTEN connection is up (it starts with the hub)
        started = time.monotonic()
        post_id = create(writer, author, "Redis is away", category)
        got = stream.next_event()
        assert json.loads(got.data)["post"]["id"] == post_id
        assert time.monotonic() - started < 5
    finally:
        stream.close()


def test_a_write_wakes_every_waiting_stream_at_once_not_at_its_next_heartbeat(make_app: Callable[..., Flask]) -> None:
    """The hub wakes all its streams with one broadcast when the ring moves (Hub.changed). Heartbeats
    are 120 s apart here (the first one 30 s at the earliest), far past WAIT: a stream that only woke
    on its own timer would not have the event in time."""
    app = make_app(SSE_HEARTBEAT=120.0, SSE_MAX_PER_CLIENT=50)
    author, category = an_author(app), a_category(app)
    streams = [open_stream(app, STREAM) for _ in range(20)]
    try:
        assert all(s.status == 200 for s in streams)
        for s in streams:
            s.messages.get(timeout=WAIT)  # the opening message: the stream is past its start, waiting
        post_id = create(app, author, "Everyone at once", category)
        for s in streams:
            message = s.next_event()
            assert message.event == "post.created" and json.loads(message.data)["post"]["id"] == post_id
    finally:
        for s in streams:
            s.stop.set()  # a reader checks it after each chunk: one more event lets every one end
        create(app, author, "Goodbye", category)
        for s in streams:
            s.close()
