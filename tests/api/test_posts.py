"""Post detail, bulk get and comment threads."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select, text

from app.extensions import db
from app.models import Comment, Post
from tests.api.helpers import get_ok, links, walk


def hidden_post_ids() -> list[int]:
    return list(
        db.session.execute(
            text("SELECT id FROM posts WHERE status <> 'published' OR deleted_at IS NOT NULL ORDER BY id LIMIT 3")
        ).scalars()
    )


def busiest_post() -> Post:
    return (
        db.session.execute(
            select(Post)
            .where(Post.status == "published", Post.deleted_at.is_(None))
            .order_by(Post.comment_count.desc())
        )
        .scalars()
        .first()
    )


def test_detail_adds_body_and_matches_the_list_item(client: FlaskClient) -> None:
    item = get_ok(client, "/api/v1/feed?limit=1").get_json()["data"][0]
    detail = get_ok(client, f"/api/v1/posts/{item['id']}").get_json()
    body = detail.pop("body")
    assert body == db.session.get(Post, item["id"]).body
    assert detail == item


def test_hidden_and_missing_posts_are_404(client: FlaskClient) -> None:
    hidden = hidden_post_ids()
    assert hidden, "the seed makes drafts and deleted posts"
    for post_id in [*hidden, 10**9]:
        response = client.get(f"/api/v1/posts/{post_id}")
        assert response.status_code == 404
        assert response.mimetype == "application/problem+json"
        assert response.get_json()["code"] == "not_found"


def test_bulk_get_keeps_the_order_asked_and_leaves_out_missing_or_hidden(client: FlaskClient) -> None:
    visible = [item["id"] for item in get_ok(client, "/api/v1/feed?limit=3").get_json()["data"]]
    asked = [visible[2], *hidden_post_ids(), visible[0], 10**9, visible[1], visible[0]]
    response = get_ok(client, "/api/v1/posts?ids=" + ",".join(map(str, asked)))
    assert [item["id"] for item in response.get_json()["data"]] == [visible[2], visible[0], visible[1]]


def test_bulk_get_is_one_statement_for_100_ids(client: FlaskClient, statements: list[str]) -> None:
    ids = [item["id"] for item in get_ok(client, "/api/v1/feed?limit=100").get_json()["data"]]
    statements.clear()
    response = get_ok(client, "/api/v1/posts?ids=" + ",".join(map(str, ids)))
    assert len(response.get_json()["data"]) == 100
    assert len(statements) == 1, statements  # the tags ride along as JSON


def test_comments_walk_oldest_first_visits_each_once(client: FlaskClient, statements: list[str]) -> None:
    post = busiest_post()
    expected = list(
        db.session.execute(
            select(Comment.id).where(Comment.post_id == post.id).order_by(Comment.created_at, Comment.id)
        ).scalars()
    )
    assert len(expected) == post.comment_count > 3
    statements.clear()
    assert walk(client, f"/api/v1/posts/{post.id}/comments?limit=2") == expected
    pages = -(-len(expected) // 2)
    assert len(statements) == pages  # one each: the page's rows exist only while the post is visible


def test_a_visible_post_without_comments_is_an_empty_page_and_a_hidden_one_404(
    client: FlaskClient, statements: list[str]
) -> None:
    quiet = db.session.execute(
        select(Post.id).where(Post.visible, Post.comment_count == 0).order_by(Post.id).limit(1)
    ).scalar_one()
    statements.clear()
    body = get_ok(client, f"/api/v1/posts/{quiet}/comments").get_json()
    assert body["data"] == [] and body["meta"]["next_cursor"] is None
    assert len(statements) == 2  # the empty page, then: is the post there at all?
    for post_id in hidden_post_ids():
        db.session.add(Comment(post_id=post_id, author_id=busiest_post().author_id, body="on a hidden post"))
    db.session.commit()
    for post_id in hidden_post_ids():  # comments of a hidden post never show
        assert client.get(f"/api/v1/posts/{post_id}/comments").status_code == 404


def test_comment_pages_link_both_ways_and_end_with_null_next(client: FlaskClient) -> None:
    post = busiest_post()
    page1 = get_ok(client, f"/api/v1/posts/{post.id}/comments?limit=2")
    assert page1.get_json()["meta"]["prev_cursor"] is None  # nothing is older than the first comment
    page2 = get_ok(client, links(page1)["next"])
    back = get_ok(client, links(page2)["prev"])
    assert back.get_json()["data"] == page1.get_json()["data"]
    last = get_ok(client, f"/api/v1/posts/{post.id}/comments?limit=100")
    assert last.get_json()["meta"]["next_cursor"] is None


def test_comments_of_hidden_post_are_404(client: FlaskClient) -> None:
    for post_id in hidden_post_ids():
        assert client.get(f"/api/v1/posts/{post_id}/comments").status_code == 404


def test_timestamps_are_rfc3339_utc(client: FlaskClient) -> None:
    post = busiest_post()
    comment = get_ok(client, f"/api/v1/posts/{post.id}/comments?limit=1").get_json()["data"][0]
    parsed = datetime.strptime(comment["created_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert parsed.year > 2000


def test_post_urls_are_absolute_for_the_requesting_host_from_one_cache_entry(
    client: FlaskClient, statements: list[str]
) -> None:
    """A post's `url` is absolute like the Link headers (the contract), yet a cached page holds
    no host: the second host is answered from the same entry, with its own root filled in."""
    pages = ["/api/v1/feed?limit=3", "/api/v1/popular?limit=3"]
    first = get_ok(client, pages[0]).get_json()["data"]
    ids = ",".join(str(post["id"]) for post in first)
    pages += [f"/api/v1/posts/{first[0]['id']}", f"/api/v1/posts?ids={ids}"]
    for page in pages:
        one = client.get(page, base_url="https://one.example")
        statements.clear()
        two = client.get(page, base_url="http://two.example:8080")
        assert statements == [] and one.headers["ETag"] == two.headers["ETag"], page
        for response, root in ((one, "https://one.example"), (two, "http://two.example:8080")):
            body = response.get_json()
            posts = body.get("data", [body])
            assert posts and all(p["url"] == f"{root}/api/v1/posts/{p['id']}" for p in posts), page
            assert b"\\u0000" not in response.data and b"one.example" not in two.data


def test_post_urls_use_public_base_url_or_the_site(client: FlaskClient, monkeypatch: pytest.MonkeyPatch) -> None:
    config = client.application.config
    monkeypatch.setitem(config, "PUBLIC_BASE_URL", "https://api.readwire.example")
    post = get_ok(client, "/api/v1/feed?limit=1").get_json()["data"][0]
    assert post["url"] == f"https://api.readwire.example/api/v1/posts/{post['id']}"
    monkeypatch.setitem(config, "PUBLIC_SITE_URL", "https://news.example.org")
    detail = get_ok(client, f"/api/v1/posts/{post['id']}").get_json()
    assert detail["url"] == f"https://news.example.org/posts/{detail['slug']}"
