"""GET /api/v1/authors: every author once, in id order, keyset-paginated both ways, cached in
the `directory` namespace and invalidated by a new account; plus the seed's known names."""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text

from app.extensions import db
from app.services import auth as auth_service
from tests.api.helpers import assert_problem, get_ok, links, walk
from tests.conftest import cold_cache

LIST_FIELDS = ("id", "username", "display_name", "avatar_url")


def all_author_ids() -> list[int]:
    return list(db.session.execute(text("SELECT id FROM authors ORDER BY id")).scalars())


@pytest.mark.parametrize("limit", [1, 3, 100])
def test_walks_every_author_once_in_id_order(client: FlaskClient, limit: int) -> None:
    assert walk(client, f"/api/v1/authors?limit={limit}") == all_author_ids()


def test_walks_back_with_prev(client: FlaskClient) -> None:
    ids = all_author_ids()
    first = get_ok(client, "/api/v1/authors?limit=3")
    assert first.get_json()["meta"]["prev_cursor"] is None  # nothing before the first author
    second = get_ok(client, links(first)["next"])
    back = get_ok(client, links(second)["prev"]).get_json()
    assert [a["id"] for a in back["data"]] == ids[:3]


def test_items_are_the_list_view(client: FlaskClient) -> None:
    body = get_ok(client, "/api/v1/authors?limit=2").get_json()
    assert body["meta"]["limit"] == 2 and body["meta"]["next_cursor"]
    for item in body["data"]:
        assert tuple(item) == LIST_FIELDS
        detail = get_ok(client, f"/api/v1/authors/{item['username']}").get_json()
        assert {key: detail[key] for key in LIST_FIELDS} == item


def test_a_page_is_one_statement_and_a_hit_none(client: FlaskClient, statements: list[str]) -> None:
    page = get_ok(client, "/api/v1/authors?limit=5")
    cursor = page.get_json()["meta"]["next_cursor"]
    for url in ("/api/v1/authors?limit=5", f"/api/v1/authors?limit=5&cursor={cursor}", "/api/v1/authors?limit=100"):
        cold_cache(client.application)
        statements.clear()
        get_ok(client, url)
        assert len([s for s in statements if not s.lstrip().upper().startswith(("SAVEPOINT", "RELEASE"))]) == 1
        statements.clear()
        get_ok(client, url)
        assert statements == []


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("limit=0", "invalid_parameter"),
        ("limit=101", "invalid_parameter"),
        ("sort=name", "invalid_parameter"),
        ("cursor=abc", "invalid_cursor"),
    ],
)
def test_bad_input_is_400(client: FlaskClient, query: str, code: str) -> None:
    assert_problem(client.get(f"/api/v1/authors?{query}"), 400, code)


def test_a_cursor_from_another_list_is_refused(client: FlaskClient) -> None:
    cursor = get_ok(client, "/api/v1/feed?limit=1").get_json()["meta"]["next_cursor"]
    assert_problem(client.get(f"/api/v1/authors?cursor={cursor}"), 400, "invalid_cursor")


@pytest.mark.usefixtures("cheap_hashes")
def test_a_new_account_shows_at_once(app: Flask, client: FlaskClient) -> None:
    """Creating an account bumps `directory` and its own page: the cached list and a cached 404
    of its username are not served again (the list was fresh for 60 s)."""
    before = walk(client, "/api/v1/authors?limit=100")
    assert client.get("/api/v1/authors/brand_new").status_code == 404
    created = auth_service.create_author("brand_new", "Brand New", "correct horse battery", role="editor")
    assert walk(client, "/api/v1/authors?limit=100") == [*before, created.id]
    assert get_ok(client, "/api/v1/authors/brand_new").get_json()["display_name"] == "Brand New"


def test_the_seed_guarantees_the_readme_names(client: FlaskClient) -> None:
    """README.md's examples name the tag `python` and the author `ada_lovelace`: both exist
    and lead the counts (the seed gives the names to the busiest tag and author)."""
    top_tag = get_ok(client, "/api/v1/tags?limit=1").get_json()["data"][0]
    assert top_tag["slug"] == "python" and top_tag["post_count"] > 0
    author = get_ok(client, "/api/v1/authors/ada_lovelace").get_json()
    top = db.session.execute(text("SELECT max(post_count) FROM authors")).scalar()
    assert author["display_name"] == "Ada Lovelace" and author["post_count"] == top > 0
    assert get_ok(client, "/api/v1/tags/python/feed").get_json()["data"]
    assert get_ok(client, "/api/v1/authors/ada_lovelace/feed").get_json()["data"]
