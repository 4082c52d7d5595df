"""Keyset pagination in one place: page sizes, signed opaque cursors, pages, and the cursors
and Link header a page gets (the HTTP layer renders the envelope around them).

A cursor is base64url(version | direction | position micros | id | scope) + a truncated
HMAC-SHA256, unpadded. It is deterministic (no issue time), so one position always yields one
cursor string, whoever asks, and the codec accepts that string only: the decoded bytes must
encode back to exactly what was sent (no padding, no stray or `+/` characters, no other unused
trailing bits). Pages are cached under the decoded position (`Cursor.key`), never under the
string a client sent. The scope binds a cursor to the list it came from.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from urllib.parse import urlencode

from flask import Flask, current_app

from app.exceptions import InvalidCursor

Direction = Literal["next", "prev"]

LIMIT_DEFAULT = 20  # items per page when the client does not say
LIMIT_MAX = 100  # the contract's bound on `limit`

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)
_HEAD = struct.Struct(">BBqq")  # version, direction, position (µs since epoch), id
_VERSION = 1
_MAC_BYTES = 12
_DIRECTIONS: dict[int, Direction] = {0: "next", 1: "prev"}
_DIRECTION_BYTES = {"next": 0, "prev": 1}
_MAX_TOKEN_CHARS = 200

# Positions that bracket every real item: the first page of a walk starts "after" TOP,
# and a poller on an empty list resumes from BOTTOM.
TOP = (datetime(9999, 12, 31, tzinfo=UTC), 2**62)
BOTTOM = (_EPOCH, 0)


@dataclass(frozen=True, slots=True)
class Cursor:
    direction: Direction
    position: datetime
    id: int

    @property
    def key(self) -> str:
        """The position as the cache names it (the same whatever string carried it)."""
        return f"{self.direction}@{to_micros(self.position)}.{self.id}"


def position_params(params: dict[str, Any], after: Cursor | None) -> dict[str, Any]:
    """The query parameters with the cursor replaced by its decoded position: a page's cache key."""
    return params if after is None else {**params, "cursor": after.key}


def to_micros(value: datetime) -> int:
    if value.tzinfo is None:  # SQLite hands back naive UTC
        value = value.replace(tzinfo=UTC)
    return (value - _EPOCH) // _ONE_US


class CursorCodec:
    """Encodes and verifies cursors with a key derived from the app's SECRET_KEY; anything off
    raises InvalidCursor (400 invalid_cursor)."""

    def __init__(self, secret: str) -> None:
        self._key = hashlib.sha256(b"readwire/cursor/v1:" + secret.encode()).digest()

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()[:_MAC_BYTES]

    def encode(self, scope: str, direction: Direction, position: datetime, item_id: int) -> str:
        payload = _HEAD.pack(_VERSION, _DIRECTION_BYTES[direction], to_micros(position), item_id) + scope.encode()
        return base64.urlsafe_b64encode(payload + self._mac(payload)).rstrip(b"=").decode()

    def decode(self, token: str, scope: str) -> Cursor:
        """The cursor `token` names in list `scope`."""
        if not token or len(token) > _MAX_TOKEN_CHARS:
            raise InvalidCursor()
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except ValueError:
            raise InvalidCursor() from None
        if base64.urlsafe_b64encode(raw).rstrip(b"=") != token.encode():  # the one string that encodes it
            raise InvalidCursor()
        payload, mac = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
        if len(payload) < _HEAD.size or not hmac.compare_digest(mac, self._mac(payload)):
            raise InvalidCursor()
        version, direction, micros, item_id = _HEAD.unpack_from(payload)
        if version != _VERSION or direction not in _DIRECTIONS or payload[_HEAD.size :] != scope.encode():
            raise InvalidCursor()
        try:
            position = _EPOCH + timedelta(microseconds=micros)
        except OverflowError:
            raise InvalidCursor() from None
        return Cursor(_DIRECTIONS[direction], position, item_id)


class Cursors:
    """Flask extension: the current app's cursor codec (`cursors.decode(token, scope)`)."""

    key = "cursors"

    def init_app(self, app: Flask) -> None:
        app.extensions[self.key] = CursorCodec(app.config["SECRET_KEY"])

    def codec(self, app: Flask | None = None) -> CursorCodec:
        codec: CursorCodec = (app or current_app).extensions[self.key]
        return codec

    def decode(self, token: str | None, scope: str) -> Cursor | None:
        """None when no cursor was given (the first page)."""
        return None if token is None else self.codec().decode(token, scope)


@dataclass(frozen=True, slots=True)
class Page:
    """One keyset page as a service returns it: items in display order, and whether more
    items lie beyond it in the direction it was fetched."""

    items: list[dict[str, Any]]
    has_more: bool
    direction: Direction
    sort_field: str
    # Walk positions of the items when they are not (item[sort_field], item["id"]), e.g. ranks.
    positions: list[tuple[datetime, int]] | None = None


def page_rows(result: Iterable[Any], limit: int, direction: Direction) -> tuple[list[Any], bool]:
    """The page's rows in display order from a LIMIT limit+1 result, and whether more remain."""
    rows = list(result)
    has_more = len(rows) > limit
    del rows[limit:]
    if direction == "prev":  # fetched walking back: flip to display order
        rows.reverse()
    return rows, has_more


def page_cursors(
    codec: CursorCodec, scope: str, page: Page, after: Cursor | None, growing: Direction | None
) -> tuple[str | None, str | None]:
    """(next, prev) cursors for a page.

    `growing` names the end where new items appear (prev for newest-first feeds). The cursor
    toward it is always present, even on an empty page, so a poller can resume. Toward any
    other end a cursor is present only while items may remain that way: in the direction
    the page was fetched, when more rows were found; in the other, when the walk came from
    there (any cursor was given).
    """
    items, key = page.items, page.sort_field
    positions = page.positions or [(item[key], item["id"]) for item in (items[:1] + items[-1:])]
    edges = {"prev": positions[0], "next": positions[-1]} if items else {}
    origin = (after.position, after.id) if after else BOTTOM
    cursors: dict[str, str | None] = {}
    for direction in ("next", "prev"):
        if direction == growing:
            present = True
        elif direction == page.direction:
            present = bool(items) and page.has_more
        else:
            present = after is not None
        if not present:
            cursors[direction] = None
        elif items:
            cursors[direction] = codec.encode(scope, direction, *edges[direction])
        else:
            cursors[direction] = codec.encode(scope, direction, *origin)
    return cursors["next"], cursors["prev"]


def page_url(base_url: str, args: dict[str, str], cursor: str | None) -> str:
    """The URL of the page at `cursor` (None: the first page), keeping every other parameter."""
    kept = {key: value for key, value in args.items() if key != "cursor"}
    query = urlencode(kept if cursor is None else {**kept, "cursor": cursor})
    return f"{base_url}?{query}" if query else base_url


def link_header(base_url: str, args: dict[str, str], next_cursor: str | None, prev_cursor: str | None) -> str:
    """RFC 8288 Link value with absolute URLs that keep every other query parameter."""
    links = [
        f'<{page_url(base_url, args, cursor)}>; rel="{rel}"'
        for rel, cursor in (("next", next_cursor), ("prev", prev_cursor))
        if cursor is not None
    ]
    return ", ".join(links)
