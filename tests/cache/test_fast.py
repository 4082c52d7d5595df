"""Near hits answered before Flask (app/http/fast.py), on a real Redis and PostgreSQL: the same
bytes, status line and headers as the view answers (through CORS and observability), the same
validators and 304s, and every question it cannot answer with certainty left to the view."""

from __future__ import annotations

import io
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
from flask import Flask

from app.cache.keys import generation_key
from app.extensions import db
from app.http.fast import FAST
from app.observability.metrics import REGISTRY
from devstack.servers import Redis
from tests.cache.test_cache import retitle, top_post

Answer = tuple[str, list[tuple[str, str]], bytes]


def wsgi_get(app: Flask, url: str, headers: dict[str, str] | None = None, method: str = "GET") -> tuple[Answer, bool]:
    """One request through the whole WSGI stack as gunicorn makes it: (status line, header list in
    order, body), and whether the fast path answered it. A fixed X-Request-ID, so that header is
    the same on both sides."""
    path, _, query = url.partition("?")
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "api.example.test:8000",
        "HTTP_X_REQUEST_ID": "fast-path-test",
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    for name, value in (headers or {}).items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    started: dict[str, Any] = {}

    def start_response(status: str, response_headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        started["status"], started["headers"] = status, list(response_headers)

    iterable = app(environ, start_response)
    try:
        body = b"".join(iterable)
    finally:
        close = getattr(iterable, "close", None)
        if close is not None:
            close()
    return (started["status"], started["headers"], body), bool(environ.get(FAST))


def header(answer: Answer, name: str) -> str | None:
    return next((value for key, value in answer[1] if key.lower() == name.lower()), None)


@pytest.fixture
def pair(make_app: Callable[..., Flask]) -> tuple[Flask, Flask]:
    """(view only, with the fast path): two processes' worth of state on one Redis and database."""
    return make_app(FAST_HITS=False), make_app(FAST_HITS=True)


def _urls(app: Flask) -> list[str]:
    post = top_post(app)
    with app.app_context():
        username, category, tag = db.session.execute(
            db.text(
                "SELECT a.username, c.slug, (SELECT t.slug FROM tags t ORDER BY t.post_count DESC LIMIT 1) "
                "FROM posts p JOIN authors a ON a.id = p.author_id JOIN categories c ON c.id = p.category_id "
                "WHERE p.id = :id"
            ),
            {"id": post.id},
        ).one()
    client = app.test_client()
    cursor = client.get("/api/v1/feed?limit=3").get_json()["meta"]["next_cursor"]
    return [
        "/api/v1/feed",
        "/api/v1/feed?limit=3",
        f"/api/v1/feed?limit=3&cursor={cursor}",
        "/api/v1/feed?fields=title,id&limit=4",
        f"/api/v1/categories/{category}/feed",
        f"/api/v1/tags/{tag}/feed.atom",
        f"/api/v1/authors/{username}/feed.json",
        f"/api/v1/posts/{post.id}",
        f"/api/v1/posts?ids={post.id},1,2",
        f"/api/v1/posts/{post.id}/comments?limit=2",
        "/api/v1/categories",
        "/api/v1/tags",
        f"/api/v1/authors/{username}",
        "/api/v1/categories/no-such-category/feed",  # a cached 404
    ]


def test_fast_answers_are_the_views_byte_for_byte(pair: tuple[Flask, Flask]) -> None:
    view, fast = pair
    for url in _urls(view):
        wsgi_get(view, url)  # fills Redis (or finds it filled) and the view app's near copy
        wsgi_get(fast, url)  # the fast app's view learns the URL and keeps a near copy
        expected, by_fast = wsgi_get(view, url)
        assert not by_fast and header(expected, "X-App-Cache") == "near_hit", (url, expected[:2])
        answer, by_fast = wsgi_get(fast, url)
        assert by_fast, url
        assert answer == expected, url
        etag, modified = header(expected, "ETag"), header(expected, "Last-Modified")
        assert etag and modified
        for conditional in (
            {"If-None-Match": etag},
            {"If-None-Match": f'"other", {etag.removeprefix("W/")}'},
            {"If-None-Match": '"other"'},
            {"If-None-Match": "*"},
            {"If-Modified-Since": modified},
            {"If-Modified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"},
            {"If-Modified-Since": "not a date"},
            {"If-None-Match": '"other"', "If-Modified-Since": modified},  # INM wins (RFC 9110 13.1.3)
        ):
            expected, by_fast = wsgi_get(view, url, conditional)
            answer, fast_answered = wsgi_get(fast, url, conditional)
            assert not by_fast and fast_answered, (url, conditional)
            assert answer == expected, (url, conditional)
        assert expected[0] in ("200 OK", "404 NOT FOUND")


def test_the_same_page_under_another_host_is_left_to_the_view_once(pair: tuple[Flask, Flask]) -> None:
    fast = pair[1]
    url = "/api/v1/feed?limit=2"
    wsgi_get(fast, url)
    assert wsgi_get(fast, url)[1]
    other = {"Host": "other.example.test"}
    answer, by_fast = wsgi_get(fast, url, other)
    assert not by_fast and "other.example.test" in (header(answer, "Link") or "")
    again, by_fast = wsgi_get(fast, url, other)
    assert by_fast and again == answer


def test_a_write_is_read_at_once_and_a_bump_goes_back_to_the_view(
    pair: tuple[Flask, Flask], redis_client: redis.Redis
) -> None:
    view, fast = pair
    url = "/api/v1/feed?limit=5"
    wsgi_get(fast, url)
    before, by_fast = wsgi_get(fast, url)
    assert by_fast
    post = top_post(view)
    retitle(view, post.id, "Retitled behind the fast path")  # another process writes
    after, by_fast = wsgi_get(fast, url)
    assert not by_fast and header(after, "X-App-Cache") in ("miss", "hit")
    assert b"Retitled behind the fast path" in after[2] and header(after, "ETag") != header(before, "ETag")
    assert wsgi_get(fast, url, {"If-None-Match": header(before, "ETag") or ""})[0][0] == "200 OK"
    assert wsgi_get(fast, url)[1]  # near again, under the new generation
    redis_client.incr(generation_key("feed"))  # a bump with no change behind it
    redis_client.ping()  # the writers' barrier
    bumped, by_fast = wsgi_get(fast, url)
    assert not by_fast and header(bumped, "X-App-Cache") in ("miss", "hit")


def test_what_depends_on_more_than_the_url_is_never_answered_early(make_app: Callable[..., Flask]) -> None:
    fast = make_app(FAST_HITS=True)
    for url in ("/api/v1/popular", "/api/v1/healthz", "/healthz"):
        wsgi_get(fast, url)
        assert not wsgi_get(fast, url)[1], url
    wsgi_get(fast, "/api/v1/feed")
    head, by_fast = wsgi_get(fast, "/api/v1/feed", method="HEAD")
    assert not by_fast and head[0] == "200 OK" and head[2] == b""


def test_stale_entries_are_the_views(make_app: Callable[..., Flask]) -> None:
    fast = make_app(FAST_HITS=True, CACHE_TTL_FEED=0.2)
    url = "/api/v1/feed?limit=2"
    wsgi_get(fast, url)
    assert wsgi_get(fast, url)[1]
    time.sleep(0.5)  # past the TTL (+10% jitter)
    stale, by_fast = wsgi_get(fast, url)
    assert not by_fast and header(stale, "X-App-Cache") in ("refresh", "stale", "hit", "miss")


def test_redis_away_goes_to_the_view(make_app: Callable[..., Flask], redis_server: Redis) -> None:
    fast = make_app(FAST_HITS=True)
    url = "/api/v1/feed?limit=2"
    wsgi_get(fast, url)
    assert wsgi_get(fast, url)[1]
    redis_server.stop()
    try:
        time.sleep(0.3)  # past the near counters' trust window (0.1 s)
        answer, by_fast = wsgi_get(fast, url)
        assert not by_fast and answer[0] == "200 OK" and header(answer, "X-App-Cache") == "bypass"
    finally:
        redis_server.restart()


def test_fast_answers_are_counted_under_their_endpoint(make_app: Callable[..., Flask]) -> None:
    fast = make_app(FAST_HITS=True)
    url = "/api/v1/feed?limit=2"
    wsgi_get(fast, url)
    labels = {"endpoint": "feeds.global_feed", "outcome": "near_hit"}
    before = REGISTRY.get_sample_value("readwire_cache_requests_total", labels) or 0.0
    durations = {"endpoint": "feeds.global_feed", "status": "2xx"}
    count_before = REGISTRY.get_sample_value("readwire_http_request_duration_seconds_count", durations) or 0.0
    assert wsgi_get(fast, url)[1]
    assert REGISTRY.get_sample_value("readwire_cache_requests_total", labels) == before + 1
    assert REGISTRY.get_sample_value("readwire_http_request_duration_seconds_count", durations) == count_before + 1
