"""/popular: hotness order computed independently, walks pinned to their snapshot, expiry,
edits and deletes shown at once, one snapshot per interval, constant SQL per page."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select, text, update

from app.api import feeds as feeds_view
from app.extensions import db
from app.models import PopularRank, PopularSnapshot, Post
from devstack.stack import wait_until
from tests.api.helpers import get_ok, links, walk
from tests.conftest import build_app, migrate_and_seed

POPULAR = "/api/v1/popular"


class ShiftedClock:
    """time.time for the view, moved forward by `offset` seconds."""

    def __init__(self, offset: float) -> None:
        self.offset = offset

    def time(self) -> float:
        return time.time() + self.offset


def expected_ranking(snapshot_id: int, app: Flask) -> list[int]:
    """Hotness computed in SQL (not by the app's code) at the snapshot's computation time."""
    computed_at = db.session.get(PopularSnapshot, snapshot_id).computed_at  # type: ignore[union-attr]
    rows = db.session.execute(
        text(
            "SELECT id FROM (SELECT id, published_at FROM posts WHERE status = 'published' AND deleted_at IS NULL"
            " ORDER BY published_at DESC, id DESC LIMIT :candidates) newest JOIN posts USING (id, published_at)"
            " ORDER BY (comment_count + 1) / power(greatest(extract(epoch FROM :at - published_at) / 3600, 0) + 2,"
            " :gravity) DESC, published_at DESC, id DESC LIMIT :size"
        ),
        {
            "at": computed_at,
            "candidates": app.config["POPULAR_CANDIDATES"],
            "gravity": app.config["POPULAR_GRAVITY"],
            "size": app.config["POPULAR_SIZE"],
        },
    )
    return list(rows.scalars())


def latest_snapshot() -> int:
    return db.session.execute(select(func.max(PopularSnapshot.id))).scalar_one()


def test_first_page_is_the_hotness_ranking(app: Flask, client: FlaskClient) -> None:
    body = get_ok(client, f"{POPULAR}?limit=100").get_json()
    expected = expected_ranking(latest_snapshot(), app)
    assert len(expected) >= 100
    assert [item["id"] for item in body["data"]] == expected[:100]
    assert body["meta"]["prev_cursor"] is None and body["meta"]["next_cursor"]
    assert set(body["data"][0]) >= {"id", "title", "author", "category", "tags", "comment_count"}


def test_walk_visits_the_snapshot_once_in_order_and_back(app: Flask, client: FlaskClient) -> None:
    forward = walk(client, f"{POPULAR}?limit=7")
    expected = expected_ranking(latest_snapshot(), app)
    assert forward == expected
    # ... and prev from the last page walks back over the same items, page by page.
    url: str | None = f"{POPULAR}?limit=7"
    while (nxt := links(client.get(url)).get("next")) is not None:  # type: ignore[arg-type]
        url = nxt
    last_page = [item["id"] for item in client.get(url).get_json()["data"]]  # type: ignore[arg-type]
    pages = []
    url = links(client.get(url)).get("prev")  # type: ignore[arg-type]
    while url:
        response = get_ok(client, url)
        pages.append([item["id"] for item in response.get_json()["data"]])
        url = links(response).get("prev")
    assert [i for page in reversed(pages) for i in page] == forward[: -len(last_page)]


def test_a_walk_stays_on_its_snapshot_while_the_ranking_changes(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = client.get(f"{POPULAR}?limit=10")
    old_snapshot = latest_snapshot()
    old_ranking = expected_ranking(old_snapshot, app)
    seen = [item["id"] for item in first.get_json()["data"]]
    # A minute later the ranking is recomputed, after the coldest posts got a flood of comments.
    coldest = old_ranking[-5:]
    db.session.execute(update(Post).where(Post.id.in_(coldest)).values(comment_count=Post.comment_count + 10_000))
    db.session.commit()
    monkeypatch.setattr(feeds_view, "time", ShiftedClock(app.config["POPULAR_INTERVAL"]))
    fresh = get_ok(client, f"{POPULAR}?limit=10").get_json()
    assert latest_snapshot() > old_snapshot
    assert set(coldest) <= {item["id"] for item in fresh["data"]}  # the new snapshot ranks them first
    # The old walk goes on over its own snapshot: every item once, in the old order.
    seen += walk(client, links(first)["next"])
    assert seen == old_ranking


def test_an_expired_snapshot_cursor_is_refused(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    next_url = links(get_ok(client, f"{POPULAR}?limit=5"))["next"]
    later = app.config["POPULAR_RETENTION"] + app.config["POPULAR_INTERVAL"]
    monkeypatch.setattr(feeds_view, "time", ShiftedClock(later))
    get_ok(client, POPULAR)  # computing the new snapshot deletes the expired ones
    response = client.get(next_url)
    assert response.status_code == 400
    assert response.mimetype == "application/problem+json"
    assert response.get_json()["code"] == "invalid_cursor"
    assert "expired" in response.get_json()["detail"]


def test_cursors_of_other_lists_are_refused(client: FlaskClient) -> None:
    feed_next = links(get_ok(client, "/api/v1/feed?limit=5"))["next"]
    cursor = feed_next.split("cursor=")[1]
    response = client.get(f"{POPULAR}?cursor={cursor}")
    assert response.status_code == 400 and response.get_json()["code"] == "invalid_cursor"


def test_edits_and_deletes_show_at_once(client: FlaskClient) -> None:
    top = get_ok(client, f"{POPULAR}?limit=5").get_json()["data"]
    db.session.get(Post, top[0]["id"]).title = "Retitled while hot"  # type: ignore[union-attr]
    db.session.get(Post, top[1]["id"]).deleted_at = datetime.now(UTC)  # type: ignore[union-attr]
    db.session.commit()
    after = get_ok(client, f"{POPULAR}?limit=5").get_json()["data"]
    assert after[0]["title"] == "Retitled while hot"
    assert top[1]["id"] not in [item["id"] for item in after]
    assert len(after) == 5  # the page fills from further down the same snapshot


def test_one_snapshot_per_interval_whoever_asks(app: Flask, client: FlaskClient) -> None:
    for limit in (5, 20, 100):
        get_ok(client, f"{POPULAR}?limit={limit}")
    snapshot = latest_snapshot()
    assert db.session.execute(select(func.count()).select_from(PopularSnapshot)).scalar_one() == 1
    ranks = db.session.execute(
        select(func.count()).select_from(PopularRank).where(PopularRank.snapshot_id == snapshot)
    ).scalar_one()
    assert ranks == len(expected_ranking(snapshot, app))


@pytest.mark.parametrize("limit", [20, 100])
def test_pages_are_a_constant_number_of_statements(client: FlaskClient, statements: list[str], limit: int) -> None:
    url = f"{POPULAR}?limit={limit}"
    get_ok(client, url)  # computes the snapshot
    url = links(client.get(url))["next"]
    for _ in range(2):
        statements.clear()
        response = get_ok(client, url)
        assert len(statements) == 3, statements  # snapshot still there, the page, its tags
        url = links(response)["next"]


# --- snapshots built ahead: no request waits for a ranking (committed data, threads) -----------


@pytest.fixture(scope="module")
def ahead_db(make_database) -> str:  # type: ignore[no-untyped-def]
    url = make_database("readwire_popular_ahead")
    migrate_and_seed(build_app(url), 300, seed=5)
    return url


@pytest.fixture
def ahead_app(ahead_db: str) -> Iterator[Flask]:
    application = build_app(ahead_db, POPULAR_BUILD_AHEAD=2, POPULAR_INTERVAL=4)
    with application.app_context():
        db.session.execute(text("DELETE FROM popular_snapshots"))
        db.session.commit()
    yield application
    with application.app_context():
        db.engine.dispose()


def _snapshot_ids(app: Flask) -> list[int]:
    with app.app_context():
        ids = list(db.session.execute(select(PopularSnapshot.id).order_by(PopularSnapshot.id)).scalars())
        db.session.remove()
        return ids


def _cursor_snapshot(app: Flask, body: dict[str, Any]) -> int:
    from app.extensions import cursors
    from app.services.popular import cursor_snapshot

    with app.app_context():
        cursor = cursors.codec().decode(body["meta"]["next_cursor"], "popular")
        return cursor_snapshot(cursor)


def test_a_missing_snapshot_is_built_in_the_background_while_the_previous_one_is_served(
    ahead_app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.services import popular

    client = ahead_app.test_client()
    first = get_ok(client, f"{POPULAR}?limit=5").get_json()  # an empty table: this one request computes
    served = _cursor_snapshot(ahead_app, first)
    assert _snapshot_ids(ahead_app) == [served]
    slow_build = threading.Event()
    real = popular.ensure_snapshot

    def slow(snapshot_id: int, now: float) -> None:
        slow_build.wait(30)  # a ranking that takes long to compute
        real(snapshot_id, now)

    monkeypatch.setattr(popular, "ensure_snapshot", slow)
    monkeypatch.setattr(feeds_view, "time", ShiftedClock(8))  # two intervals later: no builder ran
    started = time.monotonic()
    later = get_ok(client, f"{POPULAR}?limit=5").get_json()
    assert time.monotonic() - started < 2.0  # not waiting for the build
    assert _cursor_snapshot(ahead_app, later) == served  # the previous snapshot, its cursors too
    assert later["data"] == first["data"]
    slow_build.set()
    assert wait_until(lambda: len(_snapshot_ids(ahead_app)) == 2, 30), "the background build never finished"
    newer = _snapshot_ids(ahead_app)[-1]
    assert newer > served and newer % 4 == 0  # the current interval's, clock-aligned
    assert wait_until(lambda: _cursor_snapshot(ahead_app, get_ok(client, POPULAR).get_json()) >= newer, 10)


def test_the_builder_makes_each_snapshot_before_its_interval_and_once(ahead_app: Flask) -> None:
    """Two builders (two processes' worth): every snapshot exists before its interval starts,
    and the advisory lock makes one of them compute it."""
    from app.services.popular import build_ahead_forever

    other = build_app(ahead_app.config["SQLALCHEMY_DATABASE_URI"], POPULAR_BUILD_AHEAD=2, POPULAR_INTERVAL=4)
    stop = threading.Event()
    builders = [threading.Thread(target=build_ahead_forever, args=(a, stop), daemon=True) for a in (ahead_app, other)]
    for builder in builders:
        builder.start()
    try:
        time.sleep((int(time.time()) // 4 + 1) * 4 - time.time() + 0.1)  # a whole interval ahead of each check
        for _ in range(2):
            upcoming = (int(time.time()) // 4 + 1) * 4
            time.sleep(max(0.0, upcoming - 0.5 - time.time()))  # just before the interval starts
            assert upcoming in _snapshot_ids(ahead_app), (upcoming, _snapshot_ids(ahead_app))
            time.sleep(max(0.0, upcoming + 0.1 - time.time()))
            with ahead_app.app_context():
                computed = db.session.get(PopularSnapshot, upcoming).computed_at  # type: ignore[union-attr]
                db.session.remove()
            assert computed == datetime.fromtimestamp(upcoming, UTC)  # ranked as of its interval's start
            client = ahead_app.test_client()
            assert _cursor_snapshot(ahead_app, get_ok(client, POPULAR).get_json()) == upcoming
    finally:
        stop.set()
        for builder in builders:
            builder.join(10)
        with other.app_context():
            db.engine.dispose()
