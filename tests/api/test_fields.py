"""Sparse fieldsets: `fields=` narrows lists and detail to known fields, in response order; one
normalized set is one cache entry (the full set is no set at all); unknown names are a 400."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient

from app.schemas.resources import COMMENT_FIELDS, POST_DETAIL_FIELDS, POST_FIELDS
from tests.api.helpers import get_ok, links, walk
from tests.api.test_errors import assert_problem
from tests.conftest import visible_post_ids


@pytest.fixture
def post(client: FlaskClient) -> dict[str, object]:
    return next(p for p in get_ok(client, "/api/v1/feed?limit=50").get_json()["data"] if p["comment_count"] > 2)


def test_list_items_carry_exactly_the_fields_asked_in_response_order(client: FlaskClient) -> None:
    for url in ("/api/v1/feed", "/api/v1/popular"):
        items = get_ok(client, f"{url}?fields=title,author,id").get_json()["data"]
        assert items and all(list(item) == ["id", "title", "author"] for item in items)
        assert set(items[0]["author"]) == {"id", "username", "display_name", "avatar_url"}  # nested: whole


def test_detail_bulk_and_comments_take_fields(client: FlaskClient, post: dict[str, object]) -> None:
    detail = get_ok(client, f"/api/v1/posts/{post['id']}?fields=body,title").get_json()
    assert list(detail) == ["title", "body"]
    bulk = get_ok(client, f"/api/v1/posts?ids={post['id']},1&fields=tags,id").get_json()["data"]
    assert [list(item) for item in bulk] == [["id", "tags"]] * len(bulk) and bulk[0]["id"] == post["id"]
    comments = get_ok(client, f"/api/v1/posts/{post['id']}/comments?fields=created_at,body").get_json()["data"]
    assert comments and all(list(c) == ["body", "created_at"] for c in comments)


def test_the_full_set_is_the_default_representation(client: FlaskClient, statements: list[str]) -> None:
    plain = get_ok(client, "/api/v1/feed?limit=3")
    statements.clear()
    everything = get_ok(client, f"/api/v1/feed?limit=3&fields={','.join(reversed(POST_FIELDS))}")
    assert statements == []  # the same cache entry
    assert everything.data == plain.data and everything.headers["ETag"] == plain.headers["ETag"]
    assert tuple(plain.get_json()["data"][0]) == POST_FIELDS


def test_one_set_of_fields_is_one_cache_entry_whatever_its_spelling(client: FlaskClient, statements: list[str]) -> None:
    first = get_ok(client, "/api/v1/feed?fields=title,id&limit=4")
    statements.clear()
    for spelling in ("id,title", "title,id,title", "id,id,title"):
        again = get_ok(client, f"/api/v1/feed?limit=4&fields={spelling}")
        assert again.data == first.data and again.headers["ETag"] == first.headers["ETag"]
    assert statements == []
    assert "fields=id%2Ctitle" in first.headers["Link"]  # links carry the normalized set


def test_a_walk_with_fields_visits_every_post(client: FlaskClient) -> None:
    """Cursors come from the full items, so a walk works whatever fields it keeps."""
    seen = walk(client, "/api/v1/feed?limit=30&fields=id")
    assert seen == visible_post_ids()
    response = get_ok(client, "/api/v1/feed?limit=30&fields=title")
    assert all(list(item) == ["title"] for item in response.get_json()["data"])
    assert "fields=title" in links(response)["next"]


@pytest.mark.parametrize(
    ("url", "known"),
    [
        ("/api/v1/feed?fields=id,bogus,body", POST_FIELDS),
        ("/api/v1/posts/1?fields=title,nope", POST_DETAIL_FIELDS),
        ("/api/v1/posts/1/comments?fields=title", COMMENT_FIELDS),
        ("/api/v1/posts?ids=1&fields=body", POST_FIELDS),
    ],
)
def test_unknown_fields_are_400_naming_them(client: FlaskClient, url: str, known: tuple[str, ...]) -> None:
    body = assert_problem(client.get(url), 400, "invalid_parameter")
    message = body["errors"]["fields"][0]
    unknown = sorted(set(url.split("fields=")[1].split(",")) - set(known))
    assert message.startswith(f"Unknown fields: {', '.join(unknown)}.")
    assert ", ".join(known) in message


@pytest.mark.parametrize("value", ["", ",", "id,", "ID"])
def test_malformed_fields_are_400(client: FlaskClient, value: str) -> None:
    assert_problem(client.get(f"/api/v1/feed?fields={value}"), 400, "invalid_parameter")


def test_endpoints_without_sparse_fields_refuse_the_parameter(client: FlaskClient) -> None:
    for url in ("/api/v1/categories?fields=id", "/api/v1/tags?fields=id", "/api/v1/feed.json?fields=id"):
        assert_problem(client.get(url), 400, "invalid_parameter")
