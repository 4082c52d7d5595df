"""Page fills on a real streaming replica: used once it has replayed the page's last write,
never before (paused replay, a write, then every affected page), read-your-writes, the LSN floor
after a Redis failover, health (stalled, promoted, gone), writes always on the primary."""

from __future__ import annotations

import itertools
import time
from typing import Any

import pytest
import redis
from flask import Flask
from sqlalchemy import select, text

from app.cache.keys import lsn_key
from app.extensions import db
from app.models import Post
from app.observability.metrics import PAGE_FILLS
from app.replicas import _FILL_ENGINE
from devstack.servers import Postgres, traversable_tmpdir
from tests.cache.test_cache import retitle
from tests.replicas.conftest import Paused, caught_up, primary_position, replayed, router_of, start_replica
from tests.stack.conftest import wait_for


def fills(database: str, reason: str) -> float:
    value = PAGE_FILLS.labels(database, reason)._value.get()  # a counter's current value
    return float(value)


def visible_post(app: Flask) -> dict[str, Any]:
    """The newest visible post with its category, tags and author (the namespaces an edit bumps)."""
    with app.app_context():
        row = db.session.execute(
            text(
                "SELECT p.id, p.title, c.slug, a.username FROM posts p JOIN categories c ON c.id = p.category_id"
                " JOIN authors a ON a.id = p.author_id WHERE p.status = 'published' AND p.deleted_at IS NULL"
                " ORDER BY p.published_at DESC, p.id DESC LIMIT 1"
            )
        ).one()
        tags = db.session.execute(
            text("SELECT t.slug FROM post_tags pt JOIN tags t ON t.id = pt.tag_id WHERE pt.post_id = :id"),
            {"id": row[0]},
        ).scalars()
        found = {"id": row[0], "title": row[1], "category": row[2], "author": row[3], "tags": sorted(tags)}
        db.session.remove()
        return found


def affected_pages(post: dict[str, Any], limit: int = 20) -> list[str]:
    """Every cached page that shows this post's title."""
    pages = [
        f"/api/v1/feed?limit={limit}",
        f"/api/v1/categories/{post['category']}/feed?limit={limit}",
        f"/api/v1/authors/{post['author']}/feed?limit={limit}",
        f"/api/v1/posts/{post['id']}",
        f"/api/v1/posts?ids={post['id']}",
        "/api/v1/feed.json",
    ]
    return pages + [f"/api/v1/tags/{tag}/feed?limit={limit}" for tag in post["tags"]]


def title_in(body: dict[str, Any], post_id: int) -> str | None:
    if "data" not in body:
        return body.get("title") if body.get("id") == post_id else None
    items = body["data"] if isinstance(body["data"], list) else []
    return next((item["title"] for item in items if item["id"] == post_id), None)


def shown_title(app: Flask, path: str, post_id: int) -> str | None:
    response = app.test_client().get(path)
    assert response.status_code == 200, (path, response.status_code)
    if path.endswith(".json"):  # JSON Feed items carry the title too
        items = response.get_json()["items"]
        return next((i["title"] for i in items if i["_readwire"]["id"] == post_id), None)
    return title_in(response.get_json(), post_id)


_first_fills = itertools.count(1)


def started(app: Flask, primary_url: str, replica_url: str) -> Flask:
    """The app past its first fill (which reads the floor: the primary's position when it first
    met Redis), with the replica caught up with the primary since."""
    response = app.test_client().get(f"/api/v1/tags?limit={next(_first_fills)}")  # a page no app has cached
    assert response.status_code == 200 and response.headers["X-App-Cache"] == "miss"
    assert wait_for(lambda: caught_up(primary_url, replica_url), 30), "the replica does not catch up"
    return app


def test_a_miss_is_filled_on_the_replica_once_it_has_replayed_the_pages_last_write(
    make_app: Any, statements: Any, primary_url: str, replica_url: str
) -> None:
    app = started(make_app(), primary_url, replica_url)
    seen = statements(app)
    before = fills("replica", "replayed")
    response = app.test_client().get("/api/v1/feed?limit=7")
    assert response.status_code == 200 and response.headers["X-App-Cache"] == "miss"
    assert seen.seen["replica"] and not seen.seen["primary"], seen.seen
    assert fills("replica", "replayed") == before + 1
    seen.clear()
    assert app.test_client().get("/api/v1/feed?limit=7").headers["X-App-Cache"] in ("hit", "near_hit")
    assert seen.seen == {"primary": [], "replica": []}


def test_paused_replay_then_a_write_every_affected_page_shows_it_and_the_replica_comes_back(
    make_app: Any, statements: Any, primary_url: str, replica_url: str
) -> None:
    # Two processes' worth of caches (separate near caches).
    writer, reader = started(make_app(), primary_url, replica_url), started(make_app(), primary_url, replica_url)
    post = visible_post(writer)
    pages = affected_pages(post)
    for path in pages:  # cached before the write, filled on the replica
        assert shown_title(reader, path, post["id"]) == post["title"], path
    seen = statements(reader)
    with Paused(replica_url):
        retitle(writer, post["id"], "Written while the replica is paused")
        behind = fills("primary", "behind")
        for app in (reader, writer):
            for path in pages:
                assert shown_title(app, path, post["id"]) == "Written while the replica is paused", path
        # The replica is still in rotation (not left out for lag): the LSN rule sent them all to the primary.
        assert router_of(reader).replicas[0].up
        assert fills("primary", "behind") > behind
        assert seen.seen["primary"] and not seen.seen["replica"], seen.seen
        # A page whose namespaces were not written since the replica's position still reads it.
        seen.clear()
        assert reader.test_client().get(f"/api/v1/posts/{post['id'] - 1}/comments").status_code == 200
        assert seen.seen["replica"] and not seen.seen["primary"], seen.seen
    assert wait_for(lambda: caught_up(primary_url, replica_url), 30), "the replica did not catch up"
    seen.clear()
    for path in affected_pages(post, limit=9):  # new keys: filled now, from the replica again
        assert shown_title(reader, path, post["id"]) == "Written while the replica is paused", path
    assert seen.seen["replica"] and not seen.seen["primary"], seen.seen


def test_a_write_records_its_commit_lsn_next_to_the_generations(
    make_app: Any, primary_url: str, redis_client: redis.Redis
) -> None:
    app = make_app()
    post = visible_post(app)
    before = primary_position(primary_url)
    retitle(app, post["id"], "With its LSN")
    after = primary_position(primary_url)
    for namespace in ("feed", f"post:{post['id']}", f"cat:{post['category']}", f"author:{post['author']}"):
        recorded = int(redis_client.get(lsn_key(namespace)) or 0)
        assert before < recorded <= after, namespace  # past the commit, read after it
    # A later write to other namespaces does not move this post's LSN (only its own pages wait).
    recorded = int(redis_client.get(lsn_key(f"post:{post['id']}")))
    with app.app_context():
        other = db.session.execute(select(Post.id).where(Post.id != post["id"]).limit(1)).scalar_one()
        db.session.remove()
    retitle(app, other, "Another post")
    assert int(redis_client.get(lsn_key(f"post:{post['id']}"))) == recorded


def test_after_a_redis_failover_the_floor_keeps_fills_off_a_replica_missing_lost_writes(
    make_app: Any, statements: Any, primary_url: str, replica_url: str, redis_client: redis.Redis
) -> None:
    """A failover that lost the last INCRs also lost their LSNs: the page cache raises the
    router's floor to the primary's position when it meets a new Redis primary."""
    app = started(make_app(), primary_url, replica_url)
    post = visible_post(app)
    path = f"/api/v1/posts/{post['id']}"
    assert shown_title(app, path, post["id"]) == post["title"]
    router = router_of(app)
    seen = statements(app)
    with Paused(replica_url):
        retitle(app, post["id"], "Acknowledged, then its LSN lost")
        # What a failover that lost the write's INCR and LSN leaves: the old generation is gone with
        # its page (new epoch), and the LSN is back to where the replica already is.
        redis_client.set(lsn_key(f"post:{post['id']}"), replayed(replica_url))
        redis_client.delete(lsn_key("feed"))
        router.raise_floor()  # what meeting the new primary does (app/cache/pages.py)
        assert shown_title(app, f"{path}?fields=id,title", post["id"]) == "Acknowledged, then its LSN lost"
        assert seen.seen["primary"] and not seen.seen["replica"]
        assert router.floor > replayed(replica_url)


def test_a_replica_whose_replay_stalls_is_left_out_and_comes_back_after_catching_up(
    make_app: Any, primary_url: str, replica_url: str
) -> None:
    app = make_app(DB_REPLICA_MAX_STALL=0.5)
    router = router_of(app)
    replica = router.replicas[0]
    with app.app_context():
        router.check()
        assert replica.up
        with Paused(replica_url):
            retitle(app, visible_post(app)["id"], "While replay is paused")
            # Received but not replayed, for longer than the bound.
            assert replayed(replica_url) < primary_position(primary_url)
            assert wait_for(lambda: (router.check(), not replica.up)[1], 30, 0.2), replica
            assert "stalled" in replica.reason
            assert app.test_client().get("/api/v1/feed?limit=11").status_code == 200  # on the primary
        assert wait_for(lambda: (router.check(), replica.up)[1], 30, 0.2), replica


def test_a_promoted_or_stopped_replica_is_never_read(
    make_app: Any, statements: Any, pg_server: Postgres, primary_url: str
) -> None:
    with traversable_tmpdir("readwire-replica-promoted-") as base:
        spare = start_replica(pg_server, base / "replica", "test_replica_spare")
        try:
            url = spare.url_for(primary_url.rpartition("/")[2])
            from app.config import psycopg_url

            app = started(make_app(DATABASE_REPLICA_URLS=[psycopg_url(url)]), primary_url, url)
            seen = statements(app)
            assert app.test_client().get("/api/v1/feed?limit=13").status_code == 200
            assert seen.seen["replica"]
            spare.psql("SELECT pg_promote()")  # now a primary of its own timeline: not ours
            assert wait_for(lambda: not spare.is_in_recovery(), 30)
            retitle(app, visible_post(app)["id"], "After the spare's promotion")
            seen.clear()
            assert app.test_client().get("/api/v1/feed?limit=13").status_code == 200
            assert not seen.seen["replica"] and seen.seen["primary"]
            assert not router_of(app).replicas[0].up and router_of(app).replicas[0].reason == "promoted"
            # Stopped outright while in rotation: a fill that fails there is answered from the primary.
            router_of(app).replicas[0].set_up(True, "")
            router_of(app).replicas[0].replayed = 1 << 62  # believed far enough: no check first
            spare.stop()
            response = app.test_client().get("/api/v1/feed?limit=14")
            assert response.status_code == 200
            assert not router_of(app).replicas[0].up
        finally:
            spare.stop()
            pg_server.psql("SELECT pg_drop_replication_slot('test_replica_spare')")


def test_anything_inside_a_write_reads_the_primary(make_app: Any) -> None:
    app = make_app()
    replica_engine = router_of(app).replicas[0].engine
    with app.app_context():
        token = _FILL_ENGINE.set(replica_engine)
        try:
            assert db.session.get_bind() is replica_engine  # a fill routed to the replica
            post = db.session.get(Post, visible_post(app)["id"])
            db.session.remove()
            post = db.session.execute(select(Post).limit(1)).scalar_one()
            post.title = "Pending"
            assert db.session.get_bind() is not replica_engine  # a pending change
            db.session.flush()
            assert db.session.get_bind() is not replica_engine  # flushed, not committed
            assert db.session.execute(text("SELECT pg_is_in_recovery()")).scalar() is False
        finally:
            db.session.rollback()
            _FILL_ENGINE.reset(token)
        assert db.session.get_bind() is not replica_engine


@pytest.mark.parametrize("wait", [0.0, 2.0])
def test_a_fill_behind_reads_the_primary_at_once_or_after_a_bounded_wait(
    make_app: Any, statements: Any, primary_url: str, replica_url: str, wait: float
) -> None:
    app = started(make_app(DB_REPLICA_WAIT=wait), primary_url, replica_url)
    post = visible_post(app)
    seen = statements(app)
    with Paused(replica_url) as paused:
        retitle(app, post["id"], f"Waited {wait}")
        seen.clear()  # the write's own statements
        t0 = time.monotonic()
        if wait:  # resume shortly: the fill waits for the replica instead of going to the primary
            import threading

            threading.Timer(0.3, paused.__exit__).start()
        assert shown_title(app, f"/api/v1/posts/{post['id']}", post["id"]) == f"Waited {wait}"
        took = time.monotonic() - t0
    if wait:
        assert seen.seen["replica"] and not seen.seen["primary"] and took < wait + 1.0
    else:
        assert seen.seen["primary"] and not seen.seen["replica"]
