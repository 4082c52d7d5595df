"""Renderings: what a page is as bytes, computed once on a miss and kept by the cache.

A rendering's validator (its weak ETag) is a hash of everything it sends (status, media type,
Link template, body), so equal validators mean equal bytes: a page re-rendered identically
keeps its ETag, and a poller keeps getting 304s until the content really changes.

URLs that depend on the host a client used (Link headers, a post's `url`, the absolute URLs
inside feed documents) are stored with the ROOT_URL placeholder (app/urls.py) in place of the
API's root URL, filled per request (respond.py): a stored page must not carry the Host of
whoever filled it.
"""

from __future__ import annotations

import base64
from typing import Any, Literal

import orjson
from flask import current_app
from xxhash import xxh3_128

from app.cache.entries import MEDIA_TYPES, Rendered
from app.errors import ApiError, problem_body
from app.extensions import cursors
from app.pagination import LIMIT_DEFAULT, Cursor, Direction, Page, link_header, page_cursors, page_url
from app.syndication import FeedDocument, atom_feed, json_feed
from app.urls import API_PREFIX, ROOT_URL

JSON, PROBLEM, FEED_JSON, ATOM = MEDIA_TYPES
__all__ = ["ROOT_URL"]
# How ROOT_URL starts a string value in orjson's output (it escapes NUL; a `"` before the escape
# can only open a string). Where it occurs (a post's `url`) the rendering is templated.


def holds_root_url(items: list[dict[str, Any]]) -> bool:
    """Whether these resource dicts carry ROOT_URL: posts spell their `url` alike within a
    rendering (app/services/items.py:post_urls), so the first says it. Asked of the dicts, not
    by searching the encoded page (~9 µs for 15 kB, a tenth of the serialization's cost)."""
    url = items[0].get("url") if items else None
    return isinstance(url, str) and url.startswith(ROOT_URL)


# RFC 3339 UTC with a Z, whole seconds; SQLite's naive datetimes are UTC too.
JSON_OPTIONS = orjson.OPT_NAIVE_UTC | orjson.OPT_UTC_Z | orjson.OPT_OMIT_MICROSECONDS


def json_bytes(payload: Any) -> bytes:
    return orjson.dumps(payload, option=JSON_OPTIONS)


def etag_of(status: int, media_type: str, link: str, body: bytes) -> str:
    """XXH3-128 over what the response sends. Not a cryptographic hash, and none is needed (equal
    validators must mean equal bytes; nobody gains by forging one): on a 15 kB page it took
    0.35 µs where SHA-256 took 82 µs and BLAKE2b 183 µs (timeit, same busy machine), and a
    software SHA-256 doubled the instruction count of rendering a page (bench/gate.py)."""
    digest = xxh3_128(f"{status} {media_type}\n{link}\n".encode())
    digest.update(body)
    return 'W/"' + base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode() + '"'


def rendered(body: bytes, *, status: int = 200, link: str = "", media_type: str = JSON, **flags: bool) -> Rendered:
    return Rendered(status, body, etag_of(status, media_type, link, body), link, media_type, **flags)


def rendered_json(payload: Any) -> Rendered:
    """A JSON document: one resource, or a `{"data": [...], ...}` list of them."""
    data = payload.get("data", [payload]) if isinstance(payload, dict) else []
    return rendered(json_bytes(payload), templated=isinstance(data, list) and holds_root_url(data))


def rendered_absence(err: ApiError) -> Rendered:
    """A 404 as the cache keeps it (briefly: a create bumps the namespace anyway)."""
    return rendered(problem_body(err), status=err.status, media_type=PROBLEM, negative=True)


def pick(item: dict[str, Any], fields: str | None) -> dict[str, Any]:
    """The item narrowed to a normalized `fields` value (None = every field); order is kept."""
    if fields is None:
        return item
    wanted = set(fields.split(","))
    return {key: value for key, value in item.items() if key in wanted}


def pick_all(items: list[dict[str, Any]], fields: str | None) -> list[dict[str, Any]]:
    return items if fields is None else [pick(item, fields) for item in items]


def rendered_page(
    page: Page, scope: str, after: Cursor | None, params: dict[str, Any], growing: Direction | None, path: str
) -> Rendered:
    """The contract's list envelope, narrowed to params["fields"] if given (after the cursors,
    which need the sort keys), with its Link header relative to ROOT_URL."""
    next_cursor, prev_cursor = page_cursors(cursors.codec(), scope, page, after, growing)
    data = pick_all(page.items, params.get("fields"))
    body = {
        "data": data,
        "meta": {"limit": params["limit"], "next_cursor": next_cursor, "prev_cursor": prev_cursor},
    }
    args = {key: str(value) for key, value in params.items()}
    link = link_header(ROOT_URL + path, args, next_cursor, prev_cursor)
    return rendered(json_bytes(body), link=link, templated=holds_root_url(data))


def rendered_feed_document(
    fmt: Literal["json", "atom"],
    page: Page,
    scope: str,
    after: Cursor | None,
    params: dict[str, Any],
    path: str,
    name: str | None,
) -> Rendered:
    """A page as a JSON Feed or Atom document (app/syndication.py); every API URL in it is
    relative to ROOT_URL, and so is its Link header."""
    next_cursor, prev_cursor = page_cursors(cursors.codec(), scope, page, after, "prev")
    args = {key: str(value) for key, value in params.items() if key != "cursor"}
    feed_url = ROOT_URL + path
    config = current_app.config
    site = config["PUBLIC_SITE_URL"]
    doc = FeedDocument(
        title=config["SITE_NAME"] if name is None else f"{config['SITE_NAME']}: {name}",
        feed_url=feed_url,
        # The first page at the default size is the feed itself (its WebSub topic): no query.
        page_url=feed_url
        if params.get("cursor") is None and params["limit"] == LIMIT_DEFAULT
        else page_url(feed_url, args, params.get("cursor")),
        # The feed's website: the site when there is one, else the same feed as the API's JSON
        # list (never the other syndication format: readers take that for the website).
        home_page_url=site or feed_url.rpartition(".")[0],
        # Typeless without a site: feed readers take only a text/html or typeless alternate for
        # the website (feedparser, newsboat), and calling JSON text/html would be a lie.
        home_page_type="text/html" if site else None,
        next_url=page_url(feed_url, args, next_cursor) if next_cursor else None,
        prev_url=page_url(feed_url, args, prev_cursor) if prev_cursor else None,
        api_root=ROOT_URL + API_PREFIX,
        item_type="text/html" if site else None,  # items link the site's page, else the API's JSON
        hub_url=config["WEBSUB_HUB_URL"] or None,
    )
    body = json_feed(doc, page.items) if fmt == "json" else atom_feed(doc, page.items)
    link = link_header(feed_url, args, next_cursor, prev_cursor)
    return rendered(body, link=link, media_type=FEED_JSON if fmt == "json" else ATOM, templated=True)
