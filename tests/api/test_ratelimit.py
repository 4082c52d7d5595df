"""Rate limits on sign-in (per client address) and writes (per author): IETF RateLimit fields on
every answer of a limited endpoint, 429 `rate_limited` with Retry-After past the quota, nothing
changed by a refused write, reads never limited by the app."""

from __future__ import annotations

import re

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from app.config import load_settings
from app.extensions import db, limiter
from app.models import Category, Post
from app.ratelimit import Quota, client_address
from app.services import auth as auth_service
from tests.api.test_errors import assert_problem

PASSWORD = "correct horse battery"
TOKEN_URL = "/api/v1/auth/token"
RATELIMIT = re.compile(r'^"(\w+)";r=(\d+);t=(\d+)$')


pytestmark = pytest.mark.usefixtures("cheap_hashes")


def remaining(response) -> tuple[str, int, int]:  # type: ignore[no-untyped-def]
    match = RATELIMIT.match(response.headers["RateLimit"])
    assert match, response.headers["RateLimit"]
    return match.group(1), int(match.group(2)), int(match.group(3))


def sign_in(client: FlaskClient, password: str = PASSWORD, address: str = "192.0.2.1"):  # type: ignore[no-untyped-def]
    return client.post(
        TOKEN_URL, json={"username": "rl_editor", "password": password}, environ_base={"REMOTE_ADDR": address}
    )


@pytest.fixture
def editor(client: FlaskClient) -> None:
    auth_service.create_author("rl_editor", "RL Editor", PASSWORD, role="editor")


def test_sign_in_is_limited_per_address_and_guesses_count(client: FlaskClient, editor: None) -> None:
    limit, window = client.application.config["RATELIMIT_AUTH"]
    for attempt in range(limit):
        response = sign_in(client, "wrong password")
        assert response.status_code == 401
        assert response.headers["RateLimit-Policy"] == f'"auth";q={limit};w={window}'
        name, left, reset = remaining(response)
        assert (name, left) == ("auth", limit - attempt - 1) and 1 <= reset <= window
    refused = sign_in(client)  # even the right password, once the quota is spent
    body = assert_problem(refused, 429, "rate_limited")
    assert 1 <= int(refused.headers["Retry-After"]) <= window
    assert remaining(refused)[1] == 0 and "retry in" in body["detail"]
    assert refused.headers["Cache-Control"] == "no-store"
    assert sign_in(client, address="192.0.2.2").status_code == 200  # another client is not affected


@pytest.fixture
def token(client: FlaskClient, editor: None) -> str:
    return sign_in(client, address="198.51.100.1").get_json()["access_token"]  # type: ignore[no-any-return]


def test_writes_are_limited_per_author_and_a_refused_write_changes_nothing(
    client: FlaskClient, token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(limiter.limits(client.application).quotas, "write", Quota("write", 3, 60))
    auth = {"Authorization": f"Bearer {token}"}
    category = db.session.execute(select(Category.slug).limit(1)).scalar_one()
    body = {"title": "Limited", "body": "Text.", "category": category}
    created = client.post("/api/v1/posts", json=body, headers=auth)
    assert created.status_code == 201 and remaining(created)[:2] == ("write", 2)
    invalid = client.post("/api/v1/posts", json={}, headers=auth)  # counted, and still told how much is left
    assert invalid.status_code == 422 and remaining(invalid)[1] == 1
    assert (
        client.patch(f"/api/v1/posts/{created.get_json()['id']}", json={"title": "Again"}, headers=auth).status_code
        == 200
    )
    posts_before = db.session.execute(select(func.count()).select_from(Post)).scalar()
    refused = client.post("/api/v1/posts", json=body, headers=auth)
    assert_problem(refused, 429, "rate_limited")
    assert refused.headers["RateLimit-Policy"] == '"write";q=3;w=60' and refused.headers["Retry-After"]
    assert db.session.execute(select(func.count()).select_from(Post)).scalar() == posts_before


def test_reads_carry_no_app_rate_limit(client: FlaskClient) -> None:
    for _ in range(3):
        response = client.get("/api/v1/feed")
        assert response.status_code in (200, 304) and "RateLimit" not in response.headers


def test_unauthenticated_writes_are_refused_before_counting(client: FlaskClient) -> None:
    response = client.post("/api/v1/posts", json={})
    assert response.status_code == 401 and "RateLimit" not in response.headers


def proxies() -> object:
    """TRUSTED_PROXIES as the settings parse it from the environment."""
    return load_settings({"SQLALCHEMY_DATABASE_URI": "postgresql://h/db", "SECRET_KEY": "s"})["TRUSTED_PROXIES"]


def test_client_address_trusts_only_the_configured_proxy_hops(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    forwarded = {"X-Forwarded-For": "203.0.113.9, 10.0.0.7"}  # client-supplied, then what Nginx appended
    monkeypatch.setitem(app.config, "TRUSTED_PROXIES", proxies())
    with app.test_request_context(headers=forwarded, environ_base={"REMOTE_ADDR": "127.0.0.1"}):
        assert client_address() == "127.0.0.1"  # no trusted hop: the header is ignored
        monkeypatch.setitem(app.config, "TRUSTED_PROXY_HOPS", 1)
        assert client_address() == "127.0.0.1"  # no trusted proxy address: still ignored
        monkeypatch.setenv("TRUSTED_PROXIES", "10.9.0.0/16, 127.0.0.1")
        monkeypatch.setitem(app.config, "TRUSTED_PROXIES", proxies())
        assert client_address() == "10.0.0.7"  # the address Nginx saw, not the forgeable first entry
        monkeypatch.setitem(app.config, "TRUSTED_PROXY_HOPS", 3)
        assert client_address() == "127.0.0.1"  # fewer entries than hops: fall back to the peer
    monkeypatch.setitem(app.config, "TRUSTED_PROXY_HOPS", 1)
    for peer, seen in (("10.9.3.4", "10.0.0.7"), ("10.8.3.4", "10.8.3.4"), ("::1", "::1"), ("", "unknown")):
        with app.test_request_context(headers=forwarded, environ_base={"REMOTE_ADDR": peer}):
            assert client_address() == seen, peer
