"""Bad input always gets the contract's 4xx as problem+json, never a 500."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient

from tests.api.helpers import assert_problem, get_ok

FEEDS = [
    "/api/v1/feed",
    "/api/v1/categories/{category}/feed",
    "/api/v1/tags/{tag}/feed",
    "/api/v1/authors/{author}/feed",
]


@pytest.fixture
def names(client: FlaskClient) -> dict[str, str]:
    post = get_ok(client, "/api/v1/feed?limit=1").get_json()["data"][0]
    tag = get_ok(client, "/api/v1/tags?limit=1").get_json()["data"][0]
    return {
        "category": post["category"]["slug"],
        "tag": tag["slug"],
        "author": post["author"]["username"],
        "post": str(post["id"]),
    }


@pytest.mark.parametrize("feed", FEEDS)
@pytest.mark.parametrize(
    "query",
    ["limit=0", "limit=101", "limit=abc", "limit=-1", "limit=1.5", "limit=", "limit=1&limit=2", "page=2", "LIMIT=3",
     "limit=20&utm_source=x"],
)  # fmt: skip
def test_bad_parameters_are_400_invalid_parameter(
    client: FlaskClient, names: dict[str, str], feed: str, query: str
) -> None:
    body = assert_problem(client.get(f"{feed.format(**names)}?{query}"), 400, "invalid_parameter")
    assert body["errors"], "the offending parameter is named"


@pytest.mark.parametrize("feed", FEEDS)
def test_malformed_truncated_and_tampered_cursors_are_400_invalid_cursor(
    client: FlaskClient, names: dict[str, str], feed: str
) -> None:
    url = feed.format(**names)
    cursor = get_ok(client, f"{url}?limit=2").get_json()["meta"]["next_cursor"]
    flipped = cursor[:5] + ("A" if cursor[5] != "A" else "B") + cursor[6:]
    for bad in ["abc", "!!!", "%00", cursor[:-3], cursor[:10], flipped, cursor + "A", "A" * 300, "="]:
        assert_problem(client.get(f"{url}?cursor={bad}"), 400, "invalid_cursor")


def test_a_cursor_only_works_on_the_list_it_came_from(client: FlaskClient, names: dict[str, str]) -> None:
    cursor = get_ok(client, "/api/v1/feed?limit=2").get_json()["meta"]["next_cursor"]
    category_feed = FEEDS[1].format(**names)
    assert_problem(client.get(f"{category_feed}?cursor={cursor}"), 400, "invalid_cursor")
    assert_problem(client.get(f"/api/v1/posts/{names['post']}/comments?cursor={cursor}"), 400, "invalid_cursor")


@pytest.mark.parametrize(
    "url",
    ["/api/v1/categories/no-such-category/feed", "/api/v1/tags/no-such-tag/feed", "/api/v1/authors/nobody-here/feed",
     "/api/v1/authors/nobody-here", "/api/v1/posts/999999999", "/api/v1/posts/999999999/comments",
     "/api/v1/posts/99999999999999999999999999", "/api/v1/nothing-here"],
)  # fmt: skip
def test_unknown_resources_are_404_not_found(client: FlaskClient, url: str) -> None:
    assert_problem(client.get(url), 404, "not_found")


@pytest.mark.parametrize(
    "ids", ["", "a,b", "1,,2", "1;2", "-1", "0", "1.5", ",".join(["1"] * 101), "99999999999999999999", "１"]
)
def test_bad_ids_lists_are_400(client: FlaskClient, ids: str) -> None:
    assert_problem(client.get(f"/api/v1/posts?ids={ids}"), 400, "invalid_parameter")


def test_bulk_get_needs_ids(client: FlaskClient) -> None:
    assert_problem(client.get("/api/v1/posts"), 400, "invalid_parameter")


@pytest.mark.parametrize(
    "url", ["/api/v1/categories?x=1", "/api/v1/tags?limit=501", "/api/v1/tags?limit=0", "/api/v1/posts/1?fields=x"]
)
def test_other_endpoints_reject_bad_or_unknown_parameters(client: FlaskClient, url: str) -> None:
    assert_problem(client.get(url), 400, "invalid_parameter")


def test_wrong_method_is_405_problem(client: FlaskClient) -> None:
    assert_problem(client.put("/api/v1/feed"), 405, "method_not_allowed")
