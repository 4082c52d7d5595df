"""The hot paths, each a real code path of the app, shared by the pytest benchmarks
(bench/test_hot_paths.py, wall clock) and the instruction-count gate (bench/gate.py).

A workload factory takes the app (seeded, with Redis) and an ExitStack for anything it must
undo, and returns a zero-argument callable that runs one iteration; the factory does the
set-up (warm cache, a page to serialize, ...) and asserts the iteration does what its name
says, so a broken path cannot pass as fast.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from datetime import UTC, datetime
from typing import Any

import redis
from flask import Flask

from app.cache.keys import address, generation_key, page_key
from app.extensions import cursors, db
from app.http.render import rendered_page
from app.services.posts import FeedScope, feed_page

Workload = Callable[[], Any]
FEED = "/api/v1/feed"
CATEGORY_FEED = "/api/v1/categories/{slug}/feed?limit=50"
BULK = "/api/v1/posts?ids={ids}"

# Settings that take wall-clock time out of the code paths, so instruction counts depend on
# the code alone: nothing expires or needs a refresh during a (slow, valgrind) measurement.
DETERMINISTIC = {
    "CACHE_NEAR_TRUST": 3600.0,
    "CACHE_TTL_FEED": 3600.0,
    "CACHE_TTL_POST": 3600.0,
    "CACHE_TTL_DIRECTORY": 3600.0,
    "CACHE_TTL_POPULAR": 3600.0,
    # The database deadline stays on (its per-request cost is measured) but far past valgrind's
    # slowdown (~50x): a first page fill under valgrind took longer than the 2 s default.
    "DB_DEADLINE_MS": 3_600_000,
}


def _check(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, (response.status_code, response.get_data()[:200])
    return response


def cursor_encode(app: Flask, stack: ExitStack) -> Workload:
    with app.app_context():
        codec = cursors.codec()
    at = datetime(2026, 10, 31, 12, 0, 0, 123456, tzinfo=UTC)
    return lambda: codec.encode("category:technology", "next", at, 123456)


def cursor_decode(app: Flask, stack: ExitStack) -> Workload:
    with app.app_context():
        codec = cursors.codec()
    token = codec.encode("category:technology", "next", datetime(2026, 10, 31, tzinfo=UTC), 123456)
    assert codec.decode(token, "category:technology").id == 123456
    return lambda: codec.decode(token, "category:technology")


def cache_key(app: Flask, stack: ExitStack) -> Workload:
    params = {"limit": 20, "cursor": "AQAABl7SLMxmAAAAAAAAABN0YWxsT-RF7Vha6qMB0xS2"}
    generations = [b"1234", b"56"]

    def run() -> str:
        return page_key(address("feed/cat:technology", params), b"9f3a1c2e", generations)

    return run


def serialize_page(app: Flask, stack: ExitStack) -> Workload:
    """A 20-post page (with tags) to the envelope bytes and Link template the cache stores."""
    stack.enter_context(app.test_request_context(FEED))
    page = feed_page(FeedScope("all"), None, 20)
    db.session.remove()
    assert len(page.items) == 20
    params = {"limit": 20}
    return lambda: rendered_page(page, "all", None, params, "prev", "/api/v1/feed")


def _bump(app: Flask, namespace: str) -> Callable[[], None]:
    store = redis.Redis.from_url(app.config["REDIS_URL"])
    key = generation_key(namespace)

    def bump() -> None:
        store.incr(key)
        store.ping()  # the writers' barrier: the near counters have seen the INCR (app/cache/store.py)

    return bump


def feed_hit(app: Flask, stack: ExitStack) -> Workload:
    client = app.test_client()
    body = _check(client.get(FEED)).get_data()
    assert _check(client.get(FEED)).get_data() == body
    return lambda: client.get(FEED)


def feed_not_modified(app: Flask, stack: ExitStack) -> Workload:
    client = app.test_client()
    etag = _check(client.get(FEED)).headers["ETag"]
    headers = {"If-None-Match": etag}
    _check(client.get(FEED, headers=headers), 304)
    return lambda: client.get(FEED, headers=headers)


def feed_miss(app: Flask, stack: ExitStack) -> Workload:
    """A miss on the category feed: one statement on PostgreSQL (the page with its tags; the
    category's id is known to the process after the warm-up request), no transaction."""
    client = app.test_client()
    with app.app_context():
        slug = db.session.execute(db.text("SELECT slug FROM categories ORDER BY post_count DESC LIMIT 1")).scalar()
    url = CATEGORY_FEED.format(slug=slug)
    bump = _bump(app, f"cat:{slug}")
    _check(client.get(url))

    def run() -> Any:
        bump()
        return client.get(url)

    return run


CONCURRENT_MISSES = 16


def feed_miss_concurrent(app: Flask, stack: ExitStack) -> Workload:
    """16 distinct misses in flight at once, as a gevent worker serves them (bench/gate.py
    monkey-patches this workload's process first): the pool, the driver's cooperative waits and
    the hub's scheduling are part of the count. A pool that cannot hold the worker's concurrent
    checkouts opens and closes connections here on every iteration, so churn (issue 11: 10 kept +
    overflow) shows up as instructions: connect, authentication, the dialect's set-up, close."""
    import gevent
    from gevent import monkey
    from sqlalchemy import event

    client = app.test_client()
    with app.app_context():
        slug = db.session.execute(db.text("SELECT slug FROM categories ORDER BY post_count DESC LIMIT 1")).scalar()
        engine = db.engine
    urls = [f"/api/v1/categories/{slug}/feed?limit={n}" for n in range(1, CONCURRENT_MISSES + 1)]
    bump = _bump(app, f"cat:{slug}")
    in_use = {"now": 0, "peak": 0}

    def checkout(*_: Any) -> None:
        in_use["now"] += 1
        in_use["peak"] = max(in_use["peak"], in_use["now"])

    def checkin(*_: Any) -> None:
        in_use["now"] -= 1

    event.listen(engine, "checkout", checkout)
    event.listen(engine, "checkin", checkin)
    stack.callback(event.remove, engine, "checkout", checkout)
    stack.callback(event.remove, engine, "checkin", checkin)

    def run() -> list[Any]:
        bump()
        jobs = [gevent.spawn(client.get, url) for url in urls]
        gevent.joinall(jobs, raise_error=True)
        return [job.value for job in jobs]

    for response, n in zip(run(), range(1, CONCURRENT_MISSES + 1), strict=True):
        assert len(_check(response).get_json()["data"]) == n
    if monkey.is_module_patched("socket"):  # under the gate: the misses really overlapped
        assert in_use["peak"] > CONCURRENT_MISSES // 2, in_use
    return run


def _some_ids(app: Flask, n: int) -> str:
    with app.app_context():
        ids = db.session.execute(
            db.text("SELECT id FROM posts WHERE status = 'published' AND deleted_at IS NULL ORDER BY id LIMIT :n"),
            {"n": n},
        ).scalars()
        return ",".join(map(str, reversed(list(ids))))


def bulk_get_hit(app: Flask, stack: ExitStack) -> Workload:
    client = app.test_client()
    url = BULK.format(ids=_some_ids(app, 50))
    assert len(_check(client.get(url)).get_json()["data"]) == 50
    return lambda: client.get(url)


def bulk_get_miss(app: Flask, stack: ExitStack) -> Workload:
    client = app.test_client()
    url = BULK.format(ids=_some_ids(app, 50))
    bump = _bump(app, "feed")
    _check(client.get(url))

    def run() -> Any:
        bump()
        return client.get(url)

    return run


def post_create(app: Flask, stack: ExitStack) -> Workload:
    """POST /posts as an editor: the write with everything it carries (taxonomy lookups, post and
    tag rows, post_count shifts, the outbox row and database generations, the push event, the
    commit, the INCRs after it, the detail it answers). Its statements are pinned by the SQL
    budget (tests/test_sql_budget.py); this counts the Python around them."""
    from flask_jwt_extended import create_access_token

    from app.extensions import limiter
    from app.models import Author, Category, Tag
    from app.ratelimit import Limits

    # Far more posts than a minute's quota: a limiter with a large one (its work still counts).
    if (limits := limiter.limits(app)) is not None:
        app.extensions[limiter.key] = Limits({**app.config, "RATELIMIT_WRITE": (1_000_000_000, 60)})
        stack.callback(app.extensions.__setitem__, limiter.key, limits)
    with app.app_context():
        editor = db.session.execute(db.select(Author).where(Author.username == "gate_editor")).scalar()
        if editor is None:
            editor = Author(username="gate_editor", display_name="Gate editor", role="editor")
            db.session.add(editor)
            db.session.commit()
        token = create_access_token(identity=str(editor.id), additional_claims={"role": "editor"})
        category = db.session.execute(db.select(Category.slug).order_by(Category.slug).limit(1)).scalar_one()
        tags = list(db.session.execute(db.select(Tag.slug).order_by(Tag.slug).limit(2)).scalars())
    client = app.test_client()
    headers = {"Authorization": f"Bearer {token}"}
    body = {"title": "A gate post", "body": "Counted.", "category": category, "tags": tags, "status": "published"}
    created = _check(client.post("/api/v1/posts", json=body, headers=headers), 201).get_json()
    assert created["category"]["slug"] == category and sorted(t["slug"] for t in created["tags"]) == tags
    return lambda: _check(client.post("/api/v1/posts", json=body, headers=headers), 201)


WORKLOADS: dict[str, Callable[[Flask, ExitStack], Workload]] = {
    "cursor_encode": cursor_encode,
    "cursor_decode": cursor_decode,
    "cache_key": cache_key,
    "serialize_page": serialize_page,
    "feed_hit": feed_hit,
    "feed_not_modified": feed_not_modified,
    "feed_miss": feed_miss,
    "feed_miss_concurrent": feed_miss_concurrent,
    "bulk_get_hit": bulk_get_hit,
    "bulk_get_miss": bulk_get_miss,
    "post_create": post_create,
}
