"""Response helpers shared by the blueprints: orjson bodies and the paginated envelope,
rendered once into the bytes the cache keeps (app/cache/pages.py serves them)."""

from __future__ import annotations

from typing import Any

import orjson
from flask import Response, current_app

from app.cache.pages import LINK_BASE, Rendered
from app.pagination import Cursor, CursorCodec, Direction, Page, link_header, page_cursors

# RFC 3339 UTC with a Z, whole seconds; SQLite's naive datetimes are UTC too.
JSON_OPTIONS = orjson.OPT_NAIVE_UTC | orjson.OPT_UTC_Z | orjson.OPT_OMIT_MICROSECONDS


def json_bytes(payload: Any) -> bytes:
    return orjson.dumps(payload, option=JSON_OPTIONS)


def json_response(payload: Any, status: int = 200) -> Response:
    return Response(json_bytes(payload), status=status, mimetype="application/json")


def rendered_json(payload: Any) -> Rendered:
    return Rendered(200, json_bytes(payload))


def pick(item: dict[str, Any], fields: str | None) -> dict[str, Any]:
    """The item narrowed to a normalized `fields` value (None = every field); order is kept."""
    if fields is None:
        return item
    wanted = set(fields.split(","))
    return {key: value for key, value in item.items() if key in wanted}


def pick_all(items: list[dict[str, Any]], fields: str | None) -> list[dict[str, Any]]:
    return items if fields is None else [pick(item, fields) for item in items]


def cursor_codec() -> CursorCodec:
    codec: CursorCodec = current_app.extensions["readwire.cursors"]
    return codec


def decode_cursor(token: str | None, scope: str) -> Cursor | None:
    return None if token is None else cursor_codec().decode(token, scope)


def rendered_page(
    page: Page, scope: str, after: Cursor | None, params: dict[str, Any], growing: Direction | None
) -> Rendered:
    """The contract's list envelope, narrowed to params["fields"] if given (after the cursors,
    which need the sort keys); its Link header is kept relative to the request URL."""
    next_cursor, prev_cursor = page_cursors(cursor_codec(), scope, page, after, growing)
    body = {
        "data": pick_all(page.items, params.get("fields")),
        "meta": {"limit": params["limit"], "next_cursor": next_cursor, "prev_cursor": prev_cursor},
    }
    args = {key: str(value) for key, value in params.items()}
    return Rendered(200, json_bytes(body), link_header(LINK_BASE, args, next_cursor, prev_cursor))
