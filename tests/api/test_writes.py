"""Writes: create, edit, publish/unpublish, delete and comment; every read reflects them at once,
bad input changes nothing, and the denormalized columns always equal a recount."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select, text

from app.extensions import db
from app.models import Category, Post, Tag
from app.services import auth as auth_service
from tests.api.helpers import assert_problem, get_ok

PASSWORD = "correct horse battery"


@dataclass
class Account:
    id: int
    username: str
    headers: dict[str, str]


pytestmark = pytest.mark.usefixtures("cheap_hashes")


def make_account(client: FlaskClient, username: str, role: str) -> Account:
    author = auth_service.create_author(username, username.replace("_", " ").title(), PASSWORD, role=role)
    response = client.post("/api/v1/auth/token", json={"username": username, "password": PASSWORD})
    assert response.status_code == 200, response.data
    return Account(author.id, username, {"Authorization": f"Bearer {response.get_json()['access_token']}"})


@pytest.fixture
def editor(client: FlaskClient) -> Account:
    return make_account(client, "ed_writer", "editor")


@pytest.fixture
def other_editor(client: FlaskClient) -> Account:
    return make_account(client, "other_editor", "editor")


@pytest.fixture
def reader(client: FlaskClient) -> Account:
    return make_account(client, "plain_reader", "author")


@pytest.fixture
def taxonomy(client: FlaskClient) -> dict[str, list[str]]:
    categories = db.session.execute(select(Category.slug).order_by(Category.id).limit(2)).scalars().all()
    tags = db.session.execute(select(Tag.slug).order_by(Tag.id).limit(4)).scalars().all()
    return {"categories": list(categories), "tags": list(tags)}


def new_post(taxonomy: dict[str, list[str]], **fields: Any) -> dict[str, Any]:
    body = {
        "title": "A fresh look at caching",
        "summary": "Why invalidation is the hard part.",
        "body": "Long form text about caches.",
        "category": taxonomy["categories"][0],
        "tags": taxonomy["tags"][:2],
    }
    body.update(fields)
    return body


def create(client: FlaskClient, account: Account, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/api/v1/posts", json=body, headers=account.headers)
    assert response.status_code == 201, response.data
    return response.get_json()  # type: ignore[no-any-return]


def patch(client: FlaskClient, account: Account, post_id: int, body: dict[str, Any]) -> dict[str, Any]:
    response = client.patch(f"/api/v1/posts/{post_id}", json=body, headers=account.headers)
    assert response.status_code == 200, response.data
    return response.get_json()  # type: ignore[no-any-return]


def feed_ids(client: FlaskClient, url: str) -> list[int]:
    return [item["id"] for item in get_ok(client, f"{url}?limit=100").get_json()["data"]]


def feeds_of(post: dict[str, Any]) -> list[str]:
    """Every feed the post can appear in (first pages: new posts are on top)."""
    return [
        "/api/v1/feed",
        f"/api/v1/categories/{post['category']['slug']}/feed",
        f"/api/v1/authors/{post['author']['username']}/feed",
        *(f"/api/v1/tags/{tag['slug']}/feed" for tag in post["tags"]),
    ]


def counts(client: FlaskClient, username: str) -> dict[str, int]:
    """post_count as the API shows it, for the author, every category and every tag."""
    found = {f"author:{username}": get_ok(client, f"/api/v1/authors/{username}").get_json()["post_count"]}
    for item in get_ok(client, "/api/v1/categories").get_json()["data"]:
        found[f"category:{item['slug']}"] = item["post_count"]
    for item in get_ok(client, "/api/v1/tags?limit=500").get_json()["data"]:
        found[f"tag:{item['slug']}"] = item["post_count"]
    return found


def shifted(before: dict[str, int], step: int, *keys: str) -> dict[str, int]:
    after = dict(before)
    for key in keys:
        after[key] += step
    return after


def keys_of(post: dict[str, Any]) -> list[str]:
    return [
        f"author:{post['author']['username']}",
        f"category:{post['category']['slug']}",
        *(f"tag:{tag['slug']}" for tag in post["tags"]),
    ]


def assert_hidden_everywhere(client: FlaskClient, post: dict[str, Any]) -> None:
    for url in feeds_of(post):
        assert post["id"] not in feed_ids(client, url), url
    assert_problem(client.get(f"/api/v1/posts/{post['id']}"), 404, "not_found")
    assert_problem(client.get(f"/api/v1/posts/{post['id']}/comments"), 404, "not_found")
    assert get_ok(client, f"/api/v1/posts?ids={post['id']}").get_json()["data"] == []


def assert_denormalized_columns_exact() -> None:
    """Every counter and copy equals what a recount from the base rows gives."""
    visible = "p.status = 'published' AND p.deleted_at IS NULL"
    checks = {
        "authors.post_count": f"SELECT a.id FROM authors a WHERE a.post_count <> "
        f"(SELECT count(*) FROM posts p WHERE p.author_id = a.id AND {visible})",
        "categories.post_count": f"SELECT c.id FROM categories c WHERE c.post_count <> "
        f"(SELECT count(*) FROM posts p WHERE p.category_id = c.id AND {visible})",
        "tags.post_count": f"SELECT t.id FROM tags t WHERE t.post_count <> (SELECT count(*) FROM post_tags pt "
        f"JOIN posts p ON p.id = pt.post_id WHERE pt.tag_id = t.id AND {visible})",
        "post_tags.published_at": f"SELECT pt.post_id FROM post_tags pt JOIN posts p ON p.id = pt.post_id "
        f"WHERE pt.published_at IS DISTINCT FROM (CASE WHEN {visible} THEN p.published_at END)",
        "posts.comment_count": "SELECT p.id FROM posts p WHERE p.comment_count <> "
        "(SELECT count(*) FROM comments c WHERE c.post_id = p.id)",
    }
    for name, sql in checks.items():
        assert db.session.execute(text(sql)).all() == [], name


def table_sizes() -> dict[str, Any]:
    return {
        table: db.session.execute(text(f"SELECT count(*) FROM {table}")).scalar()
        for table in ("posts", "post_tags", "comments")
    } | {"sums": db.session.execute(text("SELECT sum(post_count) FROM tags")).scalar()}


# --- create -----------------------------------------------------------------------------------


def test_created_post_is_in_every_feed_detail_and_count_at_once(client: FlaskClient, editor: Account, taxonomy) -> None:  # type: ignore[no-untyped-def]
    probe = {"category": {"slug": taxonomy["categories"][0]}, "author": {"username": editor.username},
             "tags": [{"slug": slug} for slug in taxonomy["tags"][:2]]}  # fmt: skip
    for url in feeds_of(probe):  # warm whatever caches the reads keep
        feed_ids(client, url)
    before = counts(client, editor.username)

    response = client.post("/api/v1/posts", json=new_post(taxonomy), headers=editor.headers)
    assert response.status_code == 201, response.data
    assert response.headers["Cache-Control"] == "no-store"
    post = response.get_json()
    assert response.headers["Location"].endswith(f"/api/v1/posts/{post['id']}")
    assert post["status"] == "published" and post["published_at"] is not None
    assert re.fullmatch(r"a-fresh-look-at-caching-[0-9a-f]{6}", post["slug"])
    assert post["author"]["id"] == editor.id
    assert [tag["slug"] for tag in post["tags"]] == sorted(taxonomy["tags"][:2])
    detail = get_ok(client, f"/api/v1/posts/{post['id']}").get_json()
    assert detail == {key: value for key, value in post.items() if key != "status"}
    for url in feeds_of(post):
        assert feed_ids(client, url)[0] == post["id"], url
    assert counts(client, editor.username) == shifted(before, 1, *keys_of(post))
    assert_denormalized_columns_exact()


def test_create_with_explicit_slug_and_non_ascii_title(client: FlaskClient, editor: Account, taxonomy) -> None:  # type: ignore[no-untyped-def]
    assert create(client, editor, new_post(taxonomy, slug="my-own-slug"))["slug"] == "my-own-slug"
    assert re.fullmatch(
        r"hello-world-[0-9a-f]{6}", create(client, editor, new_post(taxonomy, title="Héllo, Wörld!"))["slug"]
    )
    assert re.fullmatch(r"post-[0-9a-f]{6}", create(client, editor, new_post(taxonomy, title="日本語"))["slug"])
    minimal = create(client, editor, {"title": "  Padded  ", "body": "x", "category": taxonomy["categories"][1]})
    assert (minimal["title"], minimal["summary"], minimal["tags"]) == ("Padded", "", [])


def test_draft_is_hidden_until_published(client: FlaskClient, editor: Account, taxonomy) -> None:  # type: ignore[no-untyped-def]
    before = counts(client, editor.username)
    draft = create(client, editor, new_post(taxonomy, status="draft"))
    assert draft["status"] == "draft" and draft["published_at"] is None
    assert draft["author"]["username"] == editor.username and len(draft["tags"]) == 2
    assert_hidden_everywhere(client, draft)
    assert counts(client, editor.username) == before
    assert_denormalized_columns_exact()

    published = patch(client, editor, draft["id"], {"status": "published"})
    assert published["status"] == "published" and published["published_at"] is not None
    for url in feeds_of(published):
        assert feed_ids(client, url)[0] == draft["id"], url
    assert counts(client, editor.username) == shifted(before, 1, *keys_of(published))
    assert_denormalized_columns_exact()


# --- edit, unpublish, delete ------------------------------------------------------------------


def test_patch_moves_the_post_between_category_and_tag_feeds(client: FlaskClient, editor: Account, taxonomy) -> None:  # type: ignore[no-untyped-def]
    post = create(client, editor, new_post(taxonomy))
    for url in feeds_of(post):
        feed_ids(client, url)
    before = counts(client, editor.username)
    old_tag, kept_tag = taxonomy["tags"][:2]
    new_tags = [kept_tag, *taxonomy["tags"][2:4]]
    changes = {"title": "Retitled", "body": "New body.", "category": taxonomy["categories"][1], "tags": new_tags}

    edited = patch(client, editor, post["id"], changes)
    assert edited["title"] == "Retitled" and edited["body"] == "New body."
    assert edited["published_at"] == post["published_at"] and edited["updated_at"] >= post["updated_at"]
    assert get_ok(client, f"/api/v1/posts/{post['id']}").get_json()["title"] == "Retitled"
    assert post["id"] not in feed_ids(client, f"/api/v1/categories/{taxonomy['categories'][0]}/feed")
    assert post["id"] not in feed_ids(client, f"/api/v1/tags/{old_tag}/feed")
    for url in feeds_of(edited):
        top = get_ok(client, f"{url}?limit=1").get_json()["data"][0]
        assert (top["id"], top["title"]) == (post["id"], "Retitled"), url
    expected = shifted(shifted(before, -1, f"category:{taxonomy['categories'][0]}", f"tag:{old_tag}"), 1,
                       f"category:{taxonomy['categories'][1]}", *(f"tag:{slug}" for slug in taxonomy["tags"][2:4]))  # fmt: skip
    assert counts(client, editor.username) == expected
    assert_denormalized_columns_exact()


@pytest.mark.parametrize("action", ["unpublish", "delete"])
def test_unpublish_and_delete_hide_the_post_everywhere(client: FlaskClient, editor: Account, taxonomy, action) -> None:  # type: ignore[no-untyped-def]
    before = counts(client, editor.username)
    post = create(client, editor, new_post(taxonomy))
    for url in feeds_of(post):
        assert feed_ids(client, url)[0] == post["id"]  # cached with the post on top
    get_ok(client, f"/api/v1/posts/{post['id']}")
    get_ok(client, f"/api/v1/posts/{post['id']}/comments")

    if action == "unpublish":
        assert patch(client, editor, post["id"], {"status": "draft"})["status"] == "draft"
    else:
        response = client.delete(f"/api/v1/posts/{post['id']}", headers=editor.headers)
        assert response.status_code == 204 and response.data == b""
        assert_problem(client.delete(f"/api/v1/posts/{post['id']}", headers=editor.headers), 404, "not_found")
        assert_problem(
            client.patch(f"/api/v1/posts/{post['id']}", json={"title": "x"}, headers=editor.headers), 404, "not_found"
        )
    assert_hidden_everywhere(client, post)
    assert counts(client, editor.username) == before
    assert_denormalized_columns_exact()


def test_republish_keeps_the_first_published_at(client: FlaskClient, editor: Account, taxonomy) -> None:  # type: ignore[no-untyped-def]
    first = create(client, editor, new_post(taxonomy))
    newer = create(client, editor, new_post(taxonomy, title="Newer"))
    patch(client, editor, first["id"], {"status": "draft"})
    again = patch(client, editor, first["id"], {"status": "published"})
    assert again["published_at"] == first["published_at"]
    assert feed_ids(client, "/api/v1/feed")[:2] == [newer["id"], first["id"]]
    assert_denormalized_columns_exact()


def test_tag_changes_on_a_draft_move_no_counts(client: FlaskClient, editor: Account, taxonomy) -> None:  # type: ignore[no-untyped-def]
    before = counts(client, editor.username)
    draft = create(client, editor, new_post(taxonomy, status="draft"))
    patch(client, editor, draft["id"], {"tags": taxonomy["tags"][2:], "category": taxonomy["categories"][1]})
    assert counts(client, editor.username) == before
    published = patch(client, editor, draft["id"], {"status": "published", "tags": []})
    assert published["tags"] == []
    assert counts(client, editor.username) == shifted(before, 1, *keys_of(published))
    assert_denormalized_columns_exact()


# --- comments ---------------------------------------------------------------------------------


def test_any_signed_in_author_can_comment(client: FlaskClient, editor: Account, reader: Account, taxonomy) -> None:  # type: ignore[no-untyped-def]
    post = create(client, editor, new_post(taxonomy))
    assert get_ok(client, f"/api/v1/posts/{post['id']}/comments").get_json()["data"] == []
    response = client.post(f"/api/v1/posts/{post['id']}/comments", json={"body": "Nice one."}, headers=reader.headers)
    assert response.status_code == 201, response.data
    assert response.headers["Cache-Control"] == "no-store"
    comment = response.get_json()
    assert comment["author"]["username"] == reader.username and comment["post_id"] == post["id"]
    assert get_ok(client, f"/api/v1/posts/{post['id']}/comments").get_json()["data"] == [comment]
    assert get_ok(client, f"/api/v1/posts/{post['id']}").get_json()["comment_count"] == 1
    client.post(f"/api/v1/posts/{post['id']}/comments", json={"body": "Me too."}, headers=editor.headers)
    assert get_ok(client, f"/api/v1/posts/{post['id']}").get_json()["comment_count"] == 2
    assert_denormalized_columns_exact()


def test_comments_need_a_visible_post(client: FlaskClient, editor: Account, taxonomy) -> None:  # type: ignore[no-untyped-def]
    draft = create(client, editor, new_post(taxonomy, status="draft"))
    deleted = create(client, editor, new_post(taxonomy))
    client.delete(f"/api/v1/posts/{deleted['id']}", headers=editor.headers)
    sizes = table_sizes()
    for post_id in (draft["id"], deleted["id"], 10**12, 2**70):
        response = client.post(f"/api/v1/posts/{post_id}/comments", json={"body": "hi"}, headers=editor.headers)
        assert_problem(response, 404, "not_found")
    assert table_sizes() == sizes


# --- who may write ----------------------------------------------------------------------------


def test_writes_without_a_token_are_401(client: FlaskClient, taxonomy) -> None:  # type: ignore[no-untyped-def]
    post_id = feed_ids(client, "/api/v1/feed")[0]
    for method, url, body in [
        ("post", "/api/v1/posts", new_post(taxonomy)),
        ("patch", f"/api/v1/posts/{post_id}", {"title": "x"}),
        ("delete", f"/api/v1/posts/{post_id}", None),
        ("post", f"/api/v1/posts/{post_id}/comments", {"body": "x"}),
    ]:
        for headers in ({}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic dXNlcjpwdw=="}):
            response = getattr(client, method)(url, json=body, headers=headers)
            assert_problem(response, 401, "unauthorized")
            assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_only_editors_write_posts_and_only_their_own(  # type: ignore[no-untyped-def]
    client: FlaskClient, editor: Account, other_editor: Account, reader: Account, taxonomy
) -> None:
    post = create(client, editor, new_post(taxonomy))
    seeded = feed_ids(client, "/api/v1/feed")[1]  # by a seeded author
    sizes = table_sizes()
    assert_problem(client.post("/api/v1/posts", json=new_post(taxonomy), headers=reader.headers), 403, "forbidden")
    for account in (other_editor, reader):
        for post_id in (post["id"], seeded):
            url = f"/api/v1/posts/{post_id}"
            assert_problem(client.patch(url, json={"title": "Mine now"}, headers=account.headers), 403, "forbidden")
            assert_problem(client.delete(url, headers=account.headers), 403, "forbidden")
    assert get_ok(client, f"/api/v1/posts/{post['id']}").get_json()["title"] == post["title"]
    assert table_sizes() == sizes


def test_missing_posts_are_404(client: FlaskClient, editor: Account) -> None:
    for post_id in (10**12, 2**70):
        url = f"/api/v1/posts/{post_id}"
        assert_problem(client.patch(url, json={"title": "x"}, headers=editor.headers), 404, "not_found")
        assert_problem(client.delete(url, headers=editor.headers), 404, "not_found")


# --- bad input --------------------------------------------------------------------------------

CREATE_CASES = [
    ({"extra": 1}, "extra"),
    ({"title": "x" * 301}, "title"),
    ({"title": "   "}, "title"),
    ({"title": 5}, "title"),
    ({"title": None}, "title"),
    ({"summary": "x" * 1001}, "summary"),
    ({"summary": None}, "summary"),
    ({"body": ""}, "body"),
    ({"body": " \n "}, "body"),
    ({"body": "x" * 100_001}, "body"),
    ({"body": "nul\x00byte"}, "body"),
    ({"slug": "Bad Slug"}, "slug"),
    ({"slug": "a--b"}, "slug"),
    ({"slug": "-a"}, "slug"),
    ({"slug": "a" * 201}, "slug"),
    ({"category": "no-such-category"}, "category"),
    ({"category": "Not A Slug"}, "category"),
    ({"tags": ["no-such-tag"]}, "tags"),
    ({"tags": "python"}, "tags"),
    ({"tags": ["ok", "Not OK"]}, "tags.1"),
    ({"tags": [f"t{i}" for i in range(11)]}, "tags"),
    ({"status": "archived"}, "status"),
]


@pytest.mark.parametrize(("fields", "field"), CREATE_CASES)
def test_bad_create_bodies_are_422_and_change_nothing(  # type: ignore[no-untyped-def]
    client: FlaskClient, editor: Account, taxonomy, fields: dict[str, Any], field: str
) -> None:
    sizes = table_sizes()
    response = client.post("/api/v1/posts", json=new_post(taxonomy, **fields), headers=editor.headers)
    body = assert_problem(response, 422, "validation_failed")
    assert field in body["errors"], body
    assert all(isinstance(m, str) for messages in body["errors"].values() for m in messages)
    assert table_sizes() == sizes


def test_create_reports_every_bad_field_and_rejects_duplicates(client: FlaskClient, editor: Account, taxonomy) -> None:  # type: ignore[no-untyped-def]
    sizes = table_sizes()

    def errors(body: dict[str, Any]) -> dict[str, list[str]]:
        response = client.post("/api/v1/posts", json=body, headers=editor.headers)
        return assert_problem(response, 422, "validation_failed")["errors"]  # type: ignore[no-any-return]

    # Slugs are looked up only once the body itself is valid.
    assert set(errors({"title": "", "body": "x", "category": "nope"})) == {"title"}
    assert errors(new_post(taxonomy, category="nope", tags=[taxonomy["tags"][0], "nope-tag"])) == {
        "category": ["Unknown category 'nope'."],
        "tags": ["Unknown tag 'nope-tag'."],
    }
    assert errors(new_post(taxonomy, tags=[taxonomy["tags"][0]] * 2)) == {"tags": ["Tags must be unique."]}
    taken = db.session.execute(select(Post.slug).limit(1)).scalar_one()
    assert errors(new_post(taxonomy, slug=taken)) == {"slug": ["This slug is already in use."]}
    assert table_sizes() == sizes


@pytest.mark.parametrize(
    ("fields", "field"),
    [({}, "_schema"), ({"slug": "new-slug"}, "slug"), ({"title": ""}, "title"), ({"status": "gone"}, "status"),
     ({"category": "nope"}, "category"), ({"tags": ["nope"]}, "tags"), ({"author_id": 1}, "author_id")],
)  # fmt: skip
def test_bad_patch_bodies_are_422_and_change_nothing(  # type: ignore[no-untyped-def]
    client: FlaskClient, editor: Account, taxonomy, fields: dict[str, Any], field: str
) -> None:
    post = create(client, editor, new_post(taxonomy))
    response = client.patch(f"/api/v1/posts/{post['id']}", json=fields, headers=editor.headers)
    assert field in assert_problem(response, 422, "validation_failed")["errors"]
    assert get_ok(client, f"/api/v1/posts/{post['id']}").get_json() == {k: v for k, v in post.items() if k != "status"}


@pytest.mark.parametrize(
    ("body", "field"),
    [({}, "body"), ({"body": ""}, "body"), ({"body": "x" * 10_001}, "body"), ({"body": "x", "at": 1}, "at")],
)
def test_bad_comment_bodies_are_422(client: FlaskClient, editor: Account, body: dict[str, Any], field: str) -> None:
    post_id = feed_ids(client, "/api/v1/feed")[0]
    sizes = table_sizes()
    response = client.post(f"/api/v1/posts/{post_id}/comments", json=body, headers=editor.headers)
    assert field in assert_problem(response, 422, "validation_failed")["errors"]
    assert table_sizes() == sizes


@pytest.mark.parametrize(
    ("data", "content_type", "status", "code"),
    [
        ("title=x", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
        ("{}", "text/plain", 415, "unsupported_media_type"),
        ("{not json", "application/json", 400, "invalid_json"),
        ('{"title": "\\ud800"}', "application/json", 400, "invalid_json"),  # a lone surrogate
        ("", "application/json", 400, "invalid_json"),
        ("[1]", "application/json", 422, "validation_failed"),
        ('{"body": "' + "x" * (1024 * 1024) + '"}', "application/json", 413, "payload_too_large"),
    ],
    ids=["form", "text", "malformed", "surrogate", "empty", "array", "huge"],
)
def test_bodies_that_are_not_a_json_object_are_rejected(  # type: ignore[no-untyped-def]
    client: FlaskClient, editor: Account, data: str, content_type: str, status: int, code: str
) -> None:
    sizes = table_sizes()
    response = client.post("/api/v1/posts", data=data, content_type=content_type, headers=editor.headers)
    assert_problem(response, status, code)
    assert table_sizes() == sizes


# --- the denormalized columns -----------------------------------------------------------------


def test_counters_and_copies_equal_recounts_after_a_sequence_of_writes(  # type: ignore[no-untyped-def]
    client: FlaskClient, editor: Account, reader: Account, taxonomy
) -> None:
    assert_denormalized_columns_exact()  # the seed is exact to begin with
    cats, tags = taxonomy["categories"], taxonomy["tags"]
    a = create(client, editor, new_post(taxonomy, tags=tags[:3]))
    b = create(client, editor, new_post(taxonomy, status="draft", tags=tags[1:]))
    c = create(client, editor, new_post(taxonomy, category=cats[1], tags=[]))
    for post in (a, c, a):
        client.post(f"/api/v1/posts/{post['id']}/comments", json={"body": "hi"}, headers=reader.headers)
    patch(client, editor, a["id"], {"tags": [tags[0], tags[3]], "category": cats[1]})
    patch(client, editor, b["id"], {"status": "published"})
    patch(client, editor, c["id"], {"status": "draft"})
    patch(client, editor, c["id"], {"tags": tags[:2]})
    patch(client, editor, b["id"], {"tags": [tags[3]], "status": "draft"})
    patch(client, editor, b["id"], {"status": "published", "category": cats[1]})
    assert client.delete(f"/api/v1/posts/{a['id']}", headers=editor.headers).status_code == 204
    patch(client, editor, c["id"], {"status": "published"})
    assert_denormalized_columns_exact()
    assert feed_ids(client, "/api/v1/feed")[:2] == [b["id"], c["id"]]  # c kept its first published_at
    author = get_ok(client, f"/api/v1/authors/{editor.username}").get_json()
    assert author["post_count"] == 2


def test_a_written_post_has_its_absolute_url(
    client: FlaskClient, editor: Account, taxonomy: dict[str, list[str]]
) -> None:
    """The write's answer is not cached, yet spells `url` as every read does: for this host."""
    response = client.post(
        "/api/v1/posts", json=new_post(taxonomy), headers=editor.headers, base_url="https://w.example"
    )
    assert response.status_code == 201, response.data
    post = response.get_json()
    assert post["url"] == f"https://w.example/api/v1/posts/{post['id']}" and b"\\u0000" not in response.data
