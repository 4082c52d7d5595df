"""Feeds for feed readers: JSON Feed 1.1 and Atom, global and per category, tag and author.

Same pages, cursors and cache namespaces as the JSON feeds (app/api/feeds.py), so a write
invalidates them identically; each format is its own cache entry, with ETag and 304.
"""

from __future__ import annotations

from typing import Literal

from flask import Blueprint, Response, request

from app.api.feeds import scope_names
from app.cache.entries import Rendered
from app.extensions import cursors
from app.http.cached import cached
from app.http.render import rendered_feed_document
from app.pagination import position_params
from app.schemas.params import page_query, query_params
from app.services import directory
from app.services.posts import FeedScope, ScopeKind, feed_page

bp = Blueprint("syndication", __name__)

Format = Literal["json", "atom"]


def _syndicate(fmt: Format, kind: ScopeKind, key: str | None = None) -> Response:
    params = query_params(page_query)
    scope, namespace = scope_names(kind, key)
    after = cursors.decode(params.get("cursor"), scope)
    path = request.path

    def compute() -> Rendered:
        ref = None if key is None else directory.scope_ref(kind, key)
        scope_of = FeedScope("all") if ref is None else FeedScope(kind, ref[0], key)
        page = feed_page(scope_of, after, params["limit"], with_body=True)  # the body is the entries' content
        return rendered_feed_document(fmt, page, scope, after, params, path, None if ref is None else ref[1])

    return cached(f"feed.{fmt}/{namespace}", [namespace], position_params(params, after), "feed", compute)


@bp.get("/feed.json")
def global_json() -> Response:
    return _syndicate("json", "all")


@bp.get("/feed.atom")
def global_atom() -> Response:
    return _syndicate("atom", "all")


@bp.get("/categories/<slug:slug>/feed.json")
def category_json(slug: str) -> Response:
    return _syndicate("json", "category", slug)


@bp.get("/categories/<slug:slug>/feed.atom")
def category_atom(slug: str) -> Response:
    return _syndicate("atom", "category", slug)


@bp.get("/tags/<slug:slug>/feed.json")
def tag_json(slug: str) -> Response:
    return _syndicate("json", "tag", slug)


@bp.get("/tags/<slug:slug>/feed.atom")
def tag_atom(slug: str) -> Response:
    return _syndicate("atom", "tag", slug)


@bp.get("/authors/<username:username>/feed.json")
def author_json(username: str) -> Response:
    return _syndicate("json", "author", username)


@bp.get("/authors/<username:username>/feed.atom")
def author_atom(username: str) -> Response:
    return _syndicate("atom", "author", username)
