"""Syndication: JSON Feed 1.1 and Atom for every feed, valid per their specs, paged like the JSON
feeds, cached and invalidated with them, absolute URLs per request without a per-host entry."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import fastfeedparser
import feedparser
import jsonschema_rs
import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from app.extensions import db
from app.models import Post
from app.syndication import body_html
from tests.api.test_errors import assert_problem
from tests.api.test_feeds import feed_cases, publish
from tests.conftest import visible_post_ids

# JSON Feed 1.1's requirements (https://www.jsonfeed.org/version/1.1/) as a JSON Schema.
JSON_FEED_SCHEMA = {
    "type": "object",
    "required": ["version", "title", "items"],
    "properties": {
        "version": {"const": "https://jsonfeed.org/version/1.1"},
        "title": {"type": "string"},
        "home_page_url": {"type": "string", "format": "uri"},
        "feed_url": {"type": "string", "format": "uri"},
        "next_url": {"type": "string", "format": "uri"},
        "items": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["id"],
                "anyOf": [{"required": ["content_text"]}, {"required": ["content_html"]}],
                "properties": {
                    "id": {"type": "string"},
                    "url": {"type": "string", "format": "uri"},
                    "title": {"type": "string"},
                    "content_text": {"type": "string"},
                    "summary": {"type": "string"},
                    "date_published": {"type": "string", "format": "date-time"},
                    "date_modified": {"type": "string", "format": "date-time"},
                    "authors": {"type": "array", "items": {"type": "object", "required": ["name"]}},
                    "tags": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    },
    # Extensions must start with an underscore; anything else must be a key the spec defines.
    "patternProperties": {"^_": {}},
    "additionalProperties": False,
}
json_feed_validator = jsonschema_rs.validator_for(JSON_FEED_SCHEMA, validate_formats=True)


def syndication_cases() -> list[tuple[str, str]]:
    return [(url.rsplit("/feed", 1)[0] + "/feed", where) for url, where in feed_cases()]


def walk_json_feed(client: FlaskClient, url: str) -> list[int]:
    seen: list[int] = []
    while url:
        response = client.get(url)
        assert response.status_code == 200, response.data[:300]
        assert response.mimetype == "application/feed+json"
        document = response.get_json()
        json_feed_validator.validate(document)
        seen += [item["_readwire"]["id"] for item in document["items"]]
        next_url = document.get("next_url")
        url = f"{urlsplit(next_url).path}?{urlsplit(next_url).query}" if next_url else ""
    return seen


def atom(client: FlaskClient, url: str) -> Any:
    response = client.get(url)
    assert response.status_code == 200, response.data[:300]
    assert response.content_type == "application/atom+xml; charset=utf-8"
    parsed = feedparser.parse(response.data)
    assert not parsed.bozo, parsed.bozo_exception
    assert parsed.version == "atom10"
    return parsed


def test_json_feeds_walk_every_visible_post_once_in_order(client: FlaskClient) -> None:
    for url, where in syndication_cases():
        assert walk_json_feed(client, f"{url}.json?limit=40") == visible_post_ids(where), url


def test_atom_feeds_walk_every_visible_post_once_in_order(client: FlaskClient) -> None:
    for url, where in syndication_cases():
        seen: list[int] = []
        page = f"{url}.atom?limit=50"
        while page:
            parsed = atom(client, page)
            seen += [int(entry.id.rsplit("/", 1)[1]) for entry in parsed.entries]  # the API's post URL
            following = {link.rel: link.href for link in parsed.feed.links}.get("next")
            page = f"{urlsplit(following).path}?{urlsplit(following).query}" if following else ""
        assert seen == visible_post_ids(where), url


def test_atom_document_has_what_rfc_4287_requires(client: FlaskClient) -> None:
    parsed = atom(client, "/api/v1/feed.atom?limit=3")
    feed = parsed.feed
    assert feed.id == "http://localhost/api/v1/feed.atom" and feed.title == "Readwire" and feed.updated
    rels = {(link.rel, link.type) for link in feed.links}
    assert rels == {("self", "application/atom+xml"), ("alternate", "text/html"),  # feedparser's default type
                    ("next", "application/atom+xml"), ("previous", "application/atom+xml")}  # fmt: skip
    # The website a reader records: the API's JSON list of this feed (no PUBLIC_SITE_URL), never
    # the .json syndication document (newsboat took that one when it was an alternate too).
    assert feed.link == "http://localhost/api/v1/feed"
    first = client.get("/api/v1/feed?limit=3").get_json()["data"][0]
    entry = parsed.entries[0]
    url = first["url"]  # absolute, like every URL the API gives
    assert url == f"http://localhost/api/v1/posts/{first['id']}"
    assert (entry.id, entry.title, entry.link) == (url, first["title"], url)
    assert entry.author == first["author"]["display_name"]
    assert entry.summary == first["summary"] and entry.published and entry.updated
    body = client.get(first["url"]).get_json()["body"]
    assert [(c.type, c.value) for c in entry.content] == [("text/html", body_html(body))]
    terms = [tag.term for tag in entry.tags]
    assert terms == [first["category"]["slug"], *(t["slug"] for t in first["tags"])]


def test_json_feed_items_carry_the_posts(client: FlaskClient) -> None:
    document = client.get("/api/v1/feed.json?limit=2").get_json()
    posts = client.get("/api/v1/feed?limit=2").get_json()["data"]
    assert document["title"] == "Readwire" and document["feed_url"] == "http://localhost/api/v1/feed.json"
    assert document["home_page_url"] == "http://localhost/api/v1/feed"
    for item, post in zip(document["items"], posts, strict=True):
        url = post["url"]
        assert (item["id"], item["url"], item["title"], item["summary"]) == (url, url, post["title"], post["summary"])
        assert item["content_html"] == body_html(client.get(post["url"]).get_json()["body"])
        assert item["date_published"] == post["published_at"] and item["date_modified"] == post["updated_at"]
        assert item["authors"] == [{"name": post["author"]["display_name"], "avatar": post["author"]["avatar_url"]}]
        assert item["tags"] == [post["category"]["name"], *(t["name"] for t in post["tags"])]
    assert document["_readwire"]["prev_url"]  # a poller resumes from it


def test_scoped_feed_titles_name_the_scope(client: FlaskClient) -> None:
    post = client.get("/api/v1/feed?limit=1").get_json()["data"][0]
    assert client.get(f"/api/v1/categories/{post['category']['slug']}/feed.json").get_json()["title"] == (
        f"Readwire: {post['category']['name']}"
    )
    assert atom(client, f"/api/v1/authors/{post['author']['username']}/feed.atom").feed.title == (
        f"Readwire: {post['author']['display_name']}"
    )


def test_markup_and_control_characters_are_escaped(client: FlaskClient) -> None:
    hostile = 'Tom & Jerry <script>alert("x")</script> \x07bell \ud7ff'
    post = publish(summary="a < b && c > 'd'")
    db.session.get(Post, post.id).title = hostile
    db.session.get(Post, post.id).body = f'{hostile}\n\n<img src=x onerror="alert(1)">\nline two'
    db.session.commit()
    parsed = atom(client, "/api/v1/feed.atom?limit=1")
    assert parsed.entries[0].title == hostile.replace("\x07", "\ufffd")
    assert parsed.entries[0].summary == "a < b && c > 'd'"
    assert b"<script>" not in client.get("/api/v1/feed.atom?limit=1").data
    # The body is plain text: in the HTML content every character of it is text, nothing markup.
    content = parsed.entries[0].content[0].value
    assert "<script>" not in content and "<img" not in content and "&lt;img src=x" in content
    assert content.startswith("<p>Tom &amp; Jerry &lt;script&gt;") and "&gt;<br />line two</p>" in content
    item = client.get("/api/v1/feed.json?limit=1").get_json()["items"][0]
    assert item["title"] == hostile and "<img" not in item["content_html"]


def test_urls_follow_the_request_host_from_one_cache_entry(client: FlaskClient, statements: list[str]) -> None:
    first = client.get("/api/v1/feed.json?limit=2", base_url="https://one.example").get_json()
    statements.clear()
    second = client.get("/api/v1/feed.json?limit=2", base_url="http://two.example:8080").get_json()
    assert statements == []  # the same stored bytes, only the root filled in
    assert first["feed_url"] == "https://one.example/api/v1/feed.json"
    assert second["feed_url"] == "http://two.example:8080/api/v1/feed.json"
    assert second["next_url"].startswith("http://two.example:8080/api/v1/feed.json?limit=2&cursor=")
    atom_doc = client.get("/api/v1/feed.atom?limit=2", base_url="http://two.example:8080").get_data(as_text=True)
    assert "\x00" not in atom_doc and "one.example" not in atom_doc
    assert 'href="http://two.example:8080/api/v1/feed.atom?limit=2&amp;cursor=' in atom_doc


def test_public_base_url_wins_over_the_host(client: FlaskClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(client.application.config, "PUBLIC_BASE_URL", "https://api.readwire.example")
    document = client.get("/api/v1/feed.json", base_url="http://internal:8000").get_json()
    assert document["feed_url"] == "https://api.readwire.example/api/v1/feed.json"


def test_cached_conditional_and_invalidated_like_the_json_feed(client: FlaskClient, statements: list[str]) -> None:
    for url in ("/api/v1/feed.json", "/api/v1/feed.atom"):
        first = client.get(url)
        statements.clear()
        again = client.get(url)
        assert statements == [] and again.data == first.data
        etag = first.headers["ETag"]
        assert first.headers["Cache-Control"].startswith("public") and first.headers["Last-Modified"]
        assert client.get(url, headers={"If-None-Match": etag}).status_code == 304
    newest = publish()
    for url in ("/api/v1/feed.json", "/api/v1/feed.atom"):
        response = client.get(url, headers={"If-None-Match": etag})
        assert response.status_code == 200 and newest.title in response.get_data(as_text=True)


def test_a_feed_page_costs_what_the_json_page_costs(client: FlaskClient, statements: list[str]) -> None:
    slug = client.get("/api/v1/tags?limit=1").get_json()["data"][0]["slug"]
    for limit in (5, 50):
        statements.clear()
        assert client.get(f"/api/v1/tags/{slug}/feed.atom?limit={limit}").status_code == 200
        assert len([s for s in statements if "SAVEPOINT" not in s]) == 2  # scope lookup, page with its tags


@pytest.mark.parametrize(
    "url",
    ["/api/v1/categories/no-such-category/feed.json", "/api/v1/tags/no-such-tag/feed.atom",
     "/api/v1/authors/nobody/feed.json", "/api/v1/authors/Not-A-Username/feed.atom"],
)  # fmt: skip
def test_unknown_scopes_are_404(client: FlaskClient, url: str) -> None:
    assert_problem(client.get(url), 404, "not_found")


@pytest.mark.parametrize("query", ["limit=0", "limit=101", "cursor=forged", "fields=id", "x=1"])
def test_bad_parameters_are_400(client: FlaskClient, query: str) -> None:
    response = client.get(f"/api/v1/feed.atom?{query}")
    assert response.status_code == 400 and response.mimetype == "application/problem+json"


def test_a_hidden_post_leaves_the_feeds_at_once(client: FlaskClient) -> None:
    top = db.session.execute(select(Post).where(Post.id == visible_post_ids()[0])).scalar_one()
    assert atom(client, "/api/v1/feed.atom?limit=1").entries[0].title == top.title
    top.status = "draft"
    db.session.commit()
    assert atom(client, "/api/v1/feed.atom?limit=1").entries[0].title != top.title


def test_a_second_parser_reads_both_formats(client: FlaskClient) -> None:
    """fastfeedparser (an independent implementation) sees the same entries, links and content."""
    posts = client.get("/api/v1/tags/python/feed?limit=5").get_json()["data"]
    assert posts, "the seed guarantees posts tagged python"
    for fmt in ("atom", "json"):
        parsed = fastfeedparser.parse(client.get(f"/api/v1/tags/python/feed.{fmt}?limit=5").data)
        assert parsed["feed"]["link"] == "http://localhost/api/v1/tags/python/feed", fmt
        assert [entry["link"] for entry in parsed["entries"]] == [p["url"] for p in posts]
        for entry, post in zip(parsed["entries"], posts, strict=True):
            assert entry["title"] == post["title"] and entry["author"] == post["author"]["display_name"]
            html = entry["content"][0]["value"]
            assert html.startswith("<p>") and html == body_html(client.get(post["url"]).get_json()["body"]), fmt


def test_item_links_open_the_post(client: FlaskClient) -> None:
    """Without PUBLIC_SITE_URL an item links to the API's own post: a reader can open it."""
    entry = atom(client, "/api/v1/feed.atom?limit=1").entries[0]
    response = client.get(urlsplit(entry.link).path)
    assert response.status_code == 200 and response.get_json()["title"] == entry.title


def test_public_site_url_names_the_site(client: FlaskClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(client.application.config, "PUBLIC_SITE_URL", "https://news.example.org")
    post = client.get("/api/v1/feed?limit=1").get_json()["data"][0]
    assert post["url"] == f"https://news.example.org/posts/{post['slug']}"
    parsed = atom(client, "/api/v1/feed.atom?limit=1")
    assert parsed.feed.link == "https://news.example.org"
    assert (parsed.entries[0].link, parsed.entries[0].links[0].type) == (post["url"], "text/html")
    document = client.get("/api/v1/feed.json?limit=1").get_json()
    assert (document["home_page_url"], document["items"][0]["url"]) == ("https://news.example.org", post["url"])
