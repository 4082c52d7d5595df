"""Response helpers shared by the blueprints: orjson bodies and the paginated envelope."""

from __future__ import annotations

from typing import Any

import orjson
from flask import Response, current_app, request

from app.pagination import Cursor, CursorCodec, Direction, Page, link_header, page_cursors

# RFC 3339 UTC with a Z, whole seconds; SQLite's naive datetimes are UTC too.
JSON_OPTIONS = orjson.OPT_NAIVE_UTC | orjson.OPT_UTC_Z | orjson.OPT_OMIT_MICROSECONDS


def json_response(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload, option=JSON_OPTIONS), status=status, mimetype="application/json")


def cursor_codec() -> CursorCodec:
    codec: CursorCodec = current_app.extensions["readwire.cursors"]
    return codec


def decode_cursor(token: str | None, scope: str) -> Cursor | None:
    return None if token is None else cursor_codec().decode(token, scope)


def public_url() -> str:
    """Absolute URL of this resource without its query; PUBLIC_BASE_URL pins the origin."""
    base = current_app.config["PUBLIC_BASE_URL"]
    return f"{base}{request.path}" if base else request.base_url


def paginated_response(
    page: Page, scope: str, after: Cursor | None, params: dict[str, Any], growing: Direction | None
) -> Response:
    """The contract's list envelope plus its Link header."""
    next_cursor, prev_cursor = page_cursors(cursor_codec(), scope, page, after, growing)
    body = {
        "data": page.items,
        "meta": {"limit": params["limit"], "next_cursor": next_cursor, "prev_cursor": prev_cursor},
    }
    response = json_response(body)
    args = {key: str(value) for key, value in params.items()}
    response.headers["Link"] = link_header(public_url(), args, next_cursor, prev_cursor)
    return response
