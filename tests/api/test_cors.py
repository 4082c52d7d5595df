"""CORS: public reads answer `*` with the readable headers exposed, on every kind of answer
(miss, hit, 304, errors) and identically with or without an Origin; no credentials ever;
cross-origin writes only from configured origins; operational endpoints get no CORS."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app.extensions import db
from tests.conftest import build_app

ORIGIN = "https://reader.example"
MUST_EXPOSE = {"ETag", "Link", "Last-Modified", "RateLimit", "RateLimit-Policy", "Retry-After", "X-Request-ID"}


def cors(response) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {k: v for k, v in response.headers.items() if k.lower().startswith("access-control-")}


def assert_public(response) -> None:  # type: ignore[no-untyped-def]
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert {h.strip() for h in response.headers["Access-Control-Expose-Headers"].split(",")} >= MUST_EXPOSE
    assert "Access-Control-Allow-Credentials" not in response.headers
    assert "Origin" not in response.headers.get("Vary", "")  # the same answer for every origin


def test_public_reads_are_open_on_miss_hit_304_and_errors(client: FlaskClient) -> None:
    miss = client.get("/api/v1/feed", headers={"Origin": ORIGIN})
    hit = client.get("/api/v1/feed", headers={"Origin": ORIGIN})
    not_modified = client.get("/api/v1/feed", headers={"Origin": ORIGIN, "If-None-Match": hit.headers["ETag"]})
    assert not_modified.status_code == 304
    for response in (miss, hit, not_modified, client.head("/api/v1/feed"), client.get("/api/v1/feed.atom"),
                     client.get("/api/v1/posts/999999999"), client.get("/api/v1/feed?limit=0"),
                     client.get("/api/v1/nothing-here"), client.get("/api/v1/openapi.json")):  # fmt: skip
        assert_public(response)


def test_the_answer_does_not_depend_on_the_origin(client: FlaskClient) -> None:
    without = client.get("/api/v1/categories")
    answers = [cors(client.get("/api/v1/categories", headers={"Origin": o})) for o in (ORIGIN, "null", "http://x")]
    assert all(answer == cors(without) for answer in answers)


def test_read_preflight_allows_conditional_requests(client: FlaskClient) -> None:
    response = client.options(
        "/api/v1/feed",
        headers={"Origin": ORIGIN, "Access-Control-Request-Method": "GET",
                 "Access-Control-Request-Headers": "if-none-match, x-request-id"},
    )  # fmt: skip
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert {"GET", "HEAD"} <= {m.strip() for m in response.headers["Access-Control-Allow-Methods"].split(",")}
    allowed = {h.strip().lower() for h in response.headers["Access-Control-Allow-Headers"].split(",")}
    assert {"if-none-match", "if-modified-since", "x-request-id"} <= allowed
    assert int(response.headers["Access-Control-Max-Age"]) > 0
    assert "Access-Control-Allow-Credentials" not in response.headers


def test_writes_are_not_cross_origin_by_default(client: FlaskClient) -> None:
    preflight = client.options("/api/v1/posts", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"})
    assert "Access-Control-Allow-Origin" not in preflight.headers
    write = client.post("/api/v1/posts", json={}, headers={"Origin": ORIGIN})
    assert write.status_code == 401 and not cors(write)
    token = client.post("/api/v1/auth/token", json={}, headers={"Origin": ORIGIN})
    assert not cors(token)


@pytest.fixture
def allow_listed(app: Flask) -> Iterator[FlaskClient]:
    other = build_app(app.config["SQLALCHEMY_DATABASE_URI"], CORS_WRITE_ORIGINS=[ORIGIN])
    yield other.test_client()
    with other.app_context():
        db.engine.dispose()


def test_allow_listed_origins_may_write_without_credentials(allow_listed: FlaskClient) -> None:
    preflight = allow_listed.options(
        "/api/v1/posts/1",
        headers={"Origin": ORIGIN, "Access-Control-Request-Method": "PATCH",
                 "Access-Control-Request-Headers": "authorization, content-type"},
    )  # fmt: skip
    assert preflight.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "PATCH" in preflight.headers["Access-Control-Allow-Methods"]
    assert {"authorization", "content-type"} <= {
        h.strip().lower() for h in preflight.headers["Access-Control-Allow-Headers"].split(",")
    }
    assert "Origin" in preflight.headers["Vary"] and "Access-Control-Allow-Credentials" not in preflight.headers
    write = allow_listed.patch("/api/v1/posts/1", json={}, headers={"Origin": ORIGIN})
    assert write.status_code == 401
    assert write.headers["Access-Control-Allow-Origin"] == ORIGIN and "Origin" in write.headers["Vary"]
    stranger = allow_listed.options(
        "/api/v1/posts/1", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "PATCH"}
    )
    assert "Access-Control-Allow-Origin" not in stranger.headers
    assert (
        "Access-Control-Allow-Origin"
        not in allow_listed.patch("/api/v1/posts/1", json={}, headers={"Origin": "https://evil.example"}).headers
    )


def test_operational_endpoints_are_not_cross_origin(client: FlaskClient) -> None:
    for url in ("/healthz", "/readyz", "/metrics"):
        response = client.get(url, headers={"Origin": ORIGIN})
        assert response.status_code == 200 and not cors(response), url
