"""Feeds for feed readers: JSON Feed 1.1 and Atom, global and per category, tag and author.

Same pages, cursors and cache namespaces as the JSON feeds (app/api/feeds.py), so a write
invalidates them identically; each format is its own cache entry, with ETag and 304.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlencode

from flask import Blueprint, Response, current_app, request

from app.api import API_PREFIX
from app.api._http import cursor_codec, decode_cursor
from app.api.feeds import scope_names
from app.cache.pages import ATOM, FEED_JSON, LINK_BASE, ROOT_URL, Rendered, page_cache, serve
from app.errors import not_found
from app.pagination import Cursor, Page, link_header, page_cursors
from app.schemas.params import page_query, query_params
from app.services import directory
from app.services.posts import FeedScope, ScopeKind, feed_page
from app.syndication import FeedDocument, atom_feed, json_feed

bp = Blueprint("syndication", __name__)

Format = Literal["json", "atom"]
_MEDIA_TYPES: dict[Format, str] = {"json": FEED_JSON, "atom": ATOM}
_REFS = {"category": directory.category_ref, "tag": directory.tag_ref, "author": directory.author_ref}


def _syndicate(fmt: Format, kind: ScopeKind, key: str | None = None) -> Response:
    params = query_params(page_query)
    cursor_scope, namespace = scope_names(kind, key)
    after = decode_cursor(params.get("cursor"), cursor_scope)
    path = request.path

    def compute() -> Rendered:
        scope, name = FeedScope("all"), None
        if key is not None:
            ref = _REFS[kind](key)
            if ref is None:
                raise not_found(f"No {kind} '{key}'.")
            scope, name = FeedScope(kind, ref[0]), ref[1]
        page = feed_page(scope, after, params["limit"], with_body=True)
        return _rendered(fmt, page, cursor_scope, after, params, path, name)

    return serve(f"feed.{fmt}/{namespace}", [namespace], params, page_cache().policies["feed"], compute)


def _rendered(
    fmt: Format, page: Page, scope: str, after: Cursor | None, params: dict[str, Any], path: str, name: str | None
) -> Rendered:
    """The page as a feed document; every API URL in it is relative to ROOT_URL."""
    next_cursor, prev_cursor = page_cursors(cursor_codec(), scope, page, after, "prev")
    args = {key: str(value) for key, value in params.items() if key != "cursor"}
    feed_url = ROOT_URL + path
    config = current_app.config
    site = config["PUBLIC_SITE_URL"]
    doc = FeedDocument(
        title=config["SITE_NAME"] if name is None else f"{config['SITE_NAME']}: {name}",
        feed_url=feed_url,
        page_url=_page_url(feed_url, args, params.get("cursor")),
        # The feed's website: the site when there is one, else the same feed as the API's JSON
        # list (never the other syndication format: readers take it for the website).
        home_page_url=site or feed_url.rpartition(".")[0],
        # Typeless without a site: feed readers take only a text/html or typeless alternate for the
        # website (feedparser, newsboat), and calling JSON text/html would be a lie.
        home_page_type="text/html" if site else None,
        next_url=_page_url(feed_url, args, next_cursor) if next_cursor else None,
        prev_url=_page_url(feed_url, args, prev_cursor) if prev_cursor else None,
        api_root=ROOT_URL + API_PREFIX,
        # Post URLs without a site are the API's root-relative ones: absolute per request host.
        item_root="" if site else ROOT_URL,
        item_type="text/html" if site else None,
    )
    body = json_feed(doc, page.items) if fmt == "json" else atom_feed(doc, page.items, datetime.now(UTC))
    link = link_header(LINK_BASE, args, next_cursor, prev_cursor)
    return Rendered(200, body, link, _MEDIA_TYPES[fmt], templated=True)


def _page_url(feed_url: str, args: dict[str, str], cursor: str | None) -> str:
    query = urlencode(args if cursor is None else {**args, "cursor": cursor})
    return f"{feed_url}?{query}" if query else feed_url


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
