"""One accepted string per cursor: every cosmetic variant of a valid cursor (padding, stray
characters, the `+/` alphabet, a NUL, other unused trailing bits) is 400 invalid_cursor, and a
cursor page is cached under its decoded position, never under the string the client sent."""

from __future__ import annotations

import base64
import binascii
from urllib.parse import quote

import pytest
import redis
from flask.testing import FlaskClient

from devstack.servers import Redis
from tests.api.helpers import assert_problem, get_ok

_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def lenient_decode(token: str) -> bytes | None:
    """What Python's non-validating base64url decoder makes of `token` (the old codec's reading)."""
    try:
        return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        return None


def variants(cursor: str) -> list[str]:
    """Edits of `cursor` that a lenient decoder (the old codec) reads as the very same bytes."""
    raw = lenient_decode(cursor)
    assert raw is not None
    found = [cursor + suffix for suffix in (".", "~", "*", "=", "==", "===", " ", "\n", "\x00", "!")]
    found += ["\x00" + cursor, " " + cursor, cursor[:4] + "." + cursor[4:], cursor + "===="]
    found.append(cursor.replace("-", "+").replace("_", "/"))
    # The last character's unused low bits: another character decoding to the same bytes.
    found += [cursor[:-1] + c for c in _ALPHABET if c != cursor[-1] and lenient_decode(cursor[:-1] + c) == raw]
    unique = [v for v in dict.fromkeys(found) if v != cursor]
    # Most of them (the rest only when the length happens to suit the padding) read as the same bytes.
    assert sum(lenient_decode(v) == raw for v in unique) >= 8, unique
    return unique


def cursor_of(client: FlaskClient, url: str) -> str:
    """A next cursor of `url` whose string has a '-' or '_' (so the `+/` variant differs), if one comes soon."""
    cursor: str = get_ok(client, url).get_json()["meta"]["next_cursor"]
    for _ in range(20):
        if set(cursor) & {"-", "_"}:
            break
        cursor = get_ok(client, f"{url}&cursor={cursor}").get_json()["meta"]["next_cursor"]
    return cursor


@pytest.fixture
def lists(client: FlaskClient) -> dict[str, str]:
    post = get_ok(client, "/api/v1/feed?limit=1").get_json()["data"][0]
    busy = get_ok(client, "/api/v1/feed?limit=100").get_json()["data"]
    commented = max(busy, key=lambda item: item["comment_count"])
    assert commented["comment_count"] >= 3
    return {
        "feed": "/api/v1/feed?limit=2",
        "category": f"/api/v1/categories/{post['category']['slug']}/feed?limit=2",
        "author": f"/api/v1/authors/{post['author']['username']}/feed?limit=2",
        "popular": "/api/v1/popular?limit=2",
        "comments": f"/api/v1/posts/{commented['id']}/comments?limit=1",
    }


@pytest.mark.parametrize("name", ["feed", "category", "author", "popular", "comments"])
def test_every_cosmetic_variant_of_a_cursor_is_400(client: FlaskClient, lists: dict[str, str], name: str) -> None:
    url = lists[name]
    cursor = cursor_of(client, url)
    get_ok(client, f"{url}&cursor={quote(cursor)}")
    edits = variants(cursor)
    assert len(edits) >= 12
    for edit in edits:
        response = client.get(f"{url}&cursor={quote(edit, safe='')}")
        assert_problem(response, 400, "invalid_cursor")


def test_syndication_cursors_are_canonical_too(client: FlaskClient) -> None:
    for fmt in ("json", "atom"):
        cursor = cursor_of(client, "/api/v1/feed?limit=2")
        get_ok_doc = client.get(f"/api/v1/feed.{fmt}?limit=2&cursor={cursor}")
        assert get_ok_doc.status_code == 200
        for edit in variants(cursor):
            assert_problem(
                client.get(f"/api/v1/feed.{fmt}?limit=2&cursor={quote(edit, safe='')}"), 400, "invalid_cursor"
            )


def test_cursor_pages_are_cached_under_their_position_not_the_string(
    client: FlaskClient, lists: dict[str, str], redis_server: Redis
) -> None:
    store = redis.Redis.from_url(redis_server.url)
    try:
        for name in ("feed", "popular", "comments"):
            cursor = cursor_of(client, lists[name])
            first = get_ok(client, f"{lists[name]}&cursor={cursor}")
            again = get_ok(client, f"{lists[name]}&cursor={cursor}")
            assert again.headers["X-App-Cache"] in {"near_hit", "hit"}
            assert first.headers["ETag"] == again.headers["ETag"]
            keys = [key.decode() for key in store.scan_iter(match="rw:*", count=1000)]
            assert any("cursor=" in key for key in keys), keys
            assert not [key for key in keys if cursor in key], "a key carries the client's cursor string"
    finally:
        store.close()
