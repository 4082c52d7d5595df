"""Feeds: complete ordered walks, polling with prev, Link headers and constant SQL per page."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import count

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select

from app.extensions import db
from app.models import Author, Category, Post, PostTag, Tag
from app.services import directory
from tests.api.helpers import get_ok, links, walk
from tests.conftest import visible_post_ids

_serial = count()


def busiest(model, column):  # type: ignore[no-untyped-def]
    """The category/tag/author with the most visible posts (so walks span several pages)."""
    return db.session.execute(select(model).order_by(column.desc()).limit(1)).scalar_one()


def feed_cases() -> list[tuple[str, str]]:
    category = busiest(Category, Category.post_count)
    tag = busiest(Tag, Tag.post_count)
    author = busiest(Author, Author.post_count)
    return [
        ("/api/v1/feed", "TRUE"),
        (f"/api/v1/categories/{category.slug}/feed", f"p.category_id = {category.id}"),
        (
            f"/api/v1/tags/{tag.slug}/feed",
            f"p.id IN (SELECT post_id FROM post_tags WHERE tag_id = {tag.id})",
        ),
        (f"/api/v1/authors/{author.username}/feed", f"p.author_id = {author.id}"),
    ]


def publish(**fields: object) -> Post:
    """Insert a visible post (newest by default) with one tag, keeping the denormalized copy."""
    n = next(_serial)
    post = Post(
        slug=f"fresh-{n}",
        title=f"Fresh {n}",
        author_id=fields.pop("author_id", 1),
        category_id=fields.pop("category_id", 1),
        status="published",
        published_at=fields.pop("published_at", datetime.now(UTC)),
        **fields,
    )
    db.session.add(post)
    db.session.flush()
    db.session.add(PostTag(post_id=post.id, tag_id=1, published_at=post.published_at))
    db.session.commit()
    return post


def test_every_feed_walk_visits_each_visible_post_once_in_order(client: FlaskClient) -> None:
    for url, where in feed_cases():
        expected = visible_post_ids(where)
        assert len(expected) > 7, url
        assert walk(client, f"{url}?limit=7") == expected, url


def test_walk_is_exact_while_posts_are_published_between_pages(client: FlaskClient) -> None:
    expected = visible_post_ids()
    first = get_ok(client, "/api/v1/feed?limit=25")
    published: list[int] = []

    def publish_one() -> None:
        published.append(publish().id)

    seen = [item["id"] for item in first.get_json()["data"]]
    seen += walk(client, links(first)["next"], between_pages=publish_one)
    assert seen == expected
    assert 5 < len(published) < 25
    # The walk's first page still knows where "new" starts: prev returns exactly the new posts.
    poll = get_ok(client, links(first)["prev"])
    assert [item["id"] for item in poll.get_json()["data"]] == sorted(published, reverse=True)


def test_prev_returns_the_items_just_newer_than_the_page(client: FlaskClient) -> None:
    page1 = get_ok(client, "/api/v1/feed?limit=10")
    page2 = get_ok(client, links(page1)["next"])
    page3 = get_ok(client, links(page2)["next"])
    back = get_ok(client, links(page3)["prev"])
    assert back.get_json()["data"] == page2.get_json()["data"]
    assert links(back)["next"] == links(page2)["next"]


def test_polling_an_unchanged_feed_gives_an_empty_page_that_still_carries_prev(client: FlaskClient) -> None:
    top = get_ok(client, "/api/v1/feed?limit=5")
    poll = get_ok(client, links(top)["prev"])
    body = poll.get_json()
    assert body["data"] == []
    assert body["meta"]["prev_cursor"] is not None
    fresh = publish()
    again = get_ok(client, links(poll)["prev"])
    assert [item["id"] for item in again.get_json()["data"]] == [fresh.id]


def test_end_of_feed_has_no_next_but_keeps_prev(client: FlaskClient) -> None:
    expected = visible_post_ids()
    last_page_url = None
    url: str | None = "/api/v1/feed?limit=50"
    while url:
        last_page_url, response = url, get_ok(client, url)
        url = links(response).get("next")
    last = get_ok(client, last_page_url)
    assert last.get_json()["meta"]["next_cursor"] is None
    assert "prev" in links(last)
    assert last.get_json()["data"][-1]["id"] == expected[-1]


def test_link_header_keeps_other_parameters_and_matches_meta(client: FlaskClient) -> None:
    response = get_ok(client, "/api/v1/feed?limit=3")
    body = response.get_json()
    rels = links(response)
    assert set(rels) == {"next", "prev"}
    assert "limit=3" in rels["next"] and f"cursor={body['meta']['next_cursor']}" in rels["next"]
    assert body["meta"]["limit"] == 3
    assert response.headers["Link"].startswith("<http://localhost/api/v1/feed?")


def test_ties_on_published_at_are_broken_by_id(client: FlaskClient) -> None:
    moment = datetime(2030, 1, 1, tzinfo=UTC)
    ids = [publish(published_at=moment).id for _ in range(5)]
    seen = walk(client, "/api/v1/feed?limit=2")[:5]
    assert seen == sorted(ids, reverse=True)


def test_hidden_posts_never_appear(client: FlaskClient) -> None:
    draft = Post(slug="draft-x", title="Draft", author_id=1, category_id=1, status="draft")
    deleted = publish(published_at=datetime.now(UTC) + timedelta(days=1))
    deleted.deleted_at = datetime.now(UTC)
    db.session.add(draft)
    db.session.commit()
    first = get_ok(client, "/api/v1/feed?limit=100").get_json()["data"]
    assert deleted.id not in {p["id"] for p in first}
    assert client.get(f"/api/v1/posts/{deleted.id}").status_code == 404
    assert client.get(f"/api/v1/posts/{draft.id}").status_code == 404


@pytest.mark.parametrize("limit", [1, 20, 100])
def test_each_feed_page_is_a_constant_number_of_statements(
    client: FlaskClient, statements: list[str], limit: int
) -> None:
    for url, _ in feed_cases():
        first = get_ok(client, f"{url}?limit=5")
        for page_url in (f"{url}?limit={limit}", links(first)["next"].replace("limit=5", f"limit={limit}")):
            statements.clear()
            get_ok(client, page_url)
            # One statement: the page with each post's tags; the scope's id is known to the
            # process (the first request above looked it up).
            assert len(statements) == 1, (page_url, statements)


def test_a_scope_new_to_the_process_costs_one_lookup_once(client: FlaskClient, statements: list[str]) -> None:
    tag = busiest(Tag, Tag.post_count)
    directory.forget_known_scopes()  # a fresh process
    for limit, expected in ((3, 2), (4, 1)):
        statements.clear()
        get_ok(client, f"/api/v1/tags/{tag.slug}/feed?limit={limit}")
        assert len(statements) == expected, (limit, statements)


def test_a_remembered_scope_follows_a_slug_changed_by_hand(client: FlaskClient) -> None:
    """No endpoint renames a scope; a hand edit must still never serve one scope's posts under
    another's name: the page statement checks the kept id against the slug."""
    first, second = db.session.execute(select(Category).order_by(Category.post_count.desc()).limit(2)).scalars()
    old_first, old_second = first.slug, second.slug
    first_ids = [i["id"] for i in get_ok(client, f"/api/v1/categories/{old_first}/feed?limit=3").get_json()["data"]]
    assert get_ok(client, f"/api/v1/categories/{old_second}/feed?limit=3").get_json()["data"]
    first.slug, second.slug = "renamed-by-hand", "renamed-too"
    db.session.flush()
    second.slug = old_first  # the second category now carries the first one's old name
    db.session.commit()
    # New limits: distinct cache keys (a hand edit bumps no generation, by design).
    moved = get_ok(client, f"/api/v1/categories/{old_first}/feed?limit=4").get_json()["data"]
    assert moved and {item["category"]["id"] for item in moved} == {second.id}
    assert [i["id"] for i in get_ok(client, "/api/v1/categories/renamed-by-hand/feed?limit=3").get_json()["data"]] == (
        first_ids
    )
    assert client.get(f"/api/v1/categories/{old_second}/feed?limit=4").status_code == 404


def test_post_item_shape_and_field_order(client: FlaskClient) -> None:
    item = get_ok(client, "/api/v1/feed?limit=1").get_json()["data"][0]
    assert list(item) == [
        "id", "slug", "title", "summary", "url", "published_at", "updated_at",
        "author", "category", "tags", "comment_count",
    ]  # fmt: skip
    assert list(item["author"]) == ["id", "username", "display_name", "avatar_url"]
    assert list(item["category"]) == ["id", "slug", "name"]
    assert item["published_at"].endswith("Z") and "+" not in item["published_at"]
    count_tags = db.session.execute(select(func.count()).where(PostTag.post_id == item["id"])).scalar()
    assert len(item["tags"]) == count_tags
