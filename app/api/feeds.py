"""Feeds: global, per category, per tag, per author (newest first) and popular; keyset-paginated, cached."""

from __future__ import annotations

import time

from flask import Blueprint, Response

from app.extensions import cursors
from app.http.cached import cached_page
from app.pagination import position_params
from app.schemas.params import feed_query, query_params
from app.services import popular as popular_svc
from app.services.posts import ScopeKind, feed_page, feed_scope

bp = Blueprint("feeds", __name__)

# Cache namespace per scope kind; the write path bumps the same names (app/cache/invalidation.py).
_NAMESPACES = {"category": "cat", "tag": "tag", "author": "author"}


def scope_names(kind: ScopeKind, key: str | None) -> tuple[str, str]:
    """(cursor scope, cache namespace) of a feed; the syndication formats share both."""
    if key is None:
        return "all", "feed"
    return f"{kind}:{key}", f"{_NAMESPACES[kind]}:{key}"


def _feed(kind: ScopeKind, key: str | None = None) -> Response:
    params = query_params(feed_query)
    scope, namespace = scope_names(kind, key)
    after = cursors.decode(params.get("cursor"), scope)
    compute = lambda: feed_page(feed_scope(kind, key), after, params["limit"])  # noqa: E731
    return cached_page(
        f"feed/{namespace}",
        [namespace],
        params,
        "feed",
        compute,
        scope=scope,
        after=after,
        growing="prev",
        key_params=position_params(params, after),
    )


@bp.get("/feed")
def global_feed() -> Response:
    return _feed("all")


@bp.get("/categories/<slug:slug>/feed")
def category_feed(slug: str) -> Response:
    return _feed("category", slug)


@bp.get("/tags/<slug:slug>/feed")
def tag_feed(slug: str) -> Response:
    return _feed("tag", slug)


@bp.get("/authors/<username:username>/feed")
def author_feed(username: str) -> Response:
    return _feed("author", username)


@bp.get("/popular")
def popular() -> Response:
    """Hottest posts from the current snapshot; a cursor keeps walking the snapshot it came from."""
    params = query_params(feed_query)
    after = cursors.decode(params.get("cursor"), "popular")
    snapshot = popular_svc.serving_snapshot(time.time()) if after is None else popular_svc.cursor_snapshot(after)
    compute = lambda: popular_svc.popular_page(snapshot, after, params["limit"])  # noqa: E731
    # Any post change bumps "feed", which covers every post a ranking can show. Computed on the
    # primary: a snapshot built ahead is read back by the page that names it.
    key_params = {**position_params(params, after), "snapshot": snapshot}
    return cached_page(
        "popular",
        ["feed"],
        params,
        "popular",
        compute,
        scope="popular",
        after=after,
        growing=None,
        key_params=key_params,
        on_primary=True,
        by_url=False,  # the clock names the snapshot of a first page
    )
