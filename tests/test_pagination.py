"""Cursor codec: round trips, and anything forged or edited is rejected."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest

from app.exceptions import InvalidCursor
from app.pagination import CursorCodec

WHEN = datetime(2026, 3, 4, 5, 6, 7, 891011, tzinfo=UTC)


def test_round_trip_keeps_microseconds_direction_and_id() -> None:
    codec = CursorCodec("s3cret")
    for direction in ("next", "prev"):
        cursor = codec.decode(codec.encode("feed", direction, WHEN, 2**40), "feed")
        assert (cursor.direction, cursor.position, cursor.id) == (direction, WHEN, 2**40)


def test_same_position_same_cursor_string() -> None:
    codec = CursorCodec("s3cret")
    assert codec.encode("feed", "next", WHEN, 5) == codec.encode("feed", "next", WHEN, 5)


def test_url_safe_without_padding() -> None:
    token = CursorCodec("s3cret").encode("category:12", "prev", WHEN, 123456)
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


@pytest.mark.parametrize("scope", ["feed", "category:1", "tag:99"])
def test_other_key_or_scope_is_rejected(scope: str) -> None:
    token = CursorCodec("s3cret").encode(scope, "next", WHEN, 1)
    with pytest.raises(InvalidCursor):
        CursorCodec("other").decode(token, scope)
    with pytest.raises(InvalidCursor):
        CursorCodec("s3cret").decode(token, scope + "0")


def test_every_single_byte_edit_is_rejected() -> None:
    codec = CursorCodec("s3cret")
    raw = bytearray(base64.urlsafe_b64decode(codec.encode("feed", "next", WHEN, 7) + "=="))
    for i in range(len(raw)):
        edited = bytearray(raw)
        edited[i] ^= 0x01
        token = base64.urlsafe_b64encode(bytes(edited)).rstrip(b"=").decode()
        with pytest.raises(InvalidCursor) as caught:
            codec.decode(token, "feed")
        assert "cursor" in caught.value.detail
