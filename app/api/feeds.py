"""Feeds: global, per category, per tag, per author (newest first) and popular; keyset-paginated, cached."""

from __future__ import annotations

import time

from flask import Blueprint, Response

from app.api._http import decode_cursor, rendered_page
from app.cache.pages import Rendered, page_cache, serve
from app.errors import not_found
from app.schemas.params import feed_query, query_params
from app.services import directory
from app.services import popular as popular_svc
from app.services.posts import FeedScope, ScopeKind, feed_page

bp = Blueprint("feeds", __name__)

_LOOKUPS = {"category": directory.category_id, "tag": directory.tag_id, "author": directory.author_id}
# Cache namespace per scope kind; the write path bumps the same names (app/cache/invalidation.py).
_NAMESPACES = {"category": "cat", "tag": "tag", "author": "author"}


def scope_names(kind: ScopeKind, key: str | None) -> tuple[str, str]:
    """(cursor scope, cache namespace) of a feed; the syndication formats share both."""
    if key is None:
        return "all", "feed"
    return f"{kind}:{key}", f"{_NAMESPACES[kind]}:{key}"


def _feed(kind: ScopeKind, key: str | None = None) -> Response:
    params = query_params(feed_query)
    cursor_scope, namespace = scope_names(kind, key)
    after = decode_cursor(params.get("cursor"), cursor_scope)

    def compute() -> Rendered:
        scope = FeedScope("all")
        if key is not None:
            scope_id = _LOOKUPS[kind](key)
            if scope_id is None:
                raise not_found(f"No {kind} '{key}'.")
            scope = FeedScope(kind, scope_id)
        page = feed_page(scope, after, params["limit"])
        return rendered_page(page, cursor_scope, after, params, growing="prev")

    return serve(f"feed/{namespace}", [namespace], params, page_cache().policies["feed"], compute)


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
    after = decode_cursor(params.get("cursor"), "popular")
    snapshot = popular_svc.snapshot_for(time.time()) if after is None else popular_svc.cursor_snapshot(after)

    def compute() -> Rendered:
        if after is None:
            popular_svc.ensure_snapshot(snapshot, time.time())
        page = popular_svc.popular_page(snapshot, after, params["limit"])
        return rendered_page(page, "popular", after, params, growing=None)

    # Any post change bumps "feed", which covers every post a ranking can show.
    key_params = {**params, "snapshot": snapshot}
    return serve("popular", ["feed"], key_params, page_cache().policies["popular"], compute)
