"""Feeds: global, per category, per tag, per author; newest first, keyset-paginated."""

from __future__ import annotations

from flask import Blueprint, Response, request

from app.api._http import decode_cursor, paginated_response
from app.errors import not_found
from app.schemas.params import page_query, parse_query
from app.services import directory
from app.services.posts import FeedScope, ScopeKind, feed_page

bp = Blueprint("feeds", __name__)

_LOOKUPS = {"category": directory.category_id, "tag": directory.tag_id, "author": directory.author_id}


def _feed(kind: ScopeKind, key: str | None = None) -> Response:
    params = parse_query(page_query, request.args)
    scope = FeedScope("all")
    if key is not None:
        scope_id = _LOOKUPS[kind](key)
        if scope_id is None:
            raise not_found(f"No {kind} '{key}'.")
        scope = FeedScope(kind, scope_id)
    after = decode_cursor(params.get("cursor"), scope.cursor_scope)
    page = feed_page(scope, after, params["limit"])
    return paginated_response(page, scope.cursor_scope, after, params, growing="prev")


@bp.get("/feed")
def global_feed() -> Response:
    return _feed("all")


@bp.get("/categories/<slug>/feed")
def category_feed(slug: str) -> Response:
    return _feed("category", slug)


@bp.get("/tags/<slug>/feed")
def tag_feed(slug: str) -> Response:
    return _feed("tag", slug)


@bp.get("/authors/<username>/feed")
def author_feed(username: str) -> Response:
    return _feed("author", username)
