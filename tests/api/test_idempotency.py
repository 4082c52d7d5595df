"""Idempotency-Key on POST /posts and POST /posts/{id}/comments, on the real PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta

import psycopg
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select, text, update

from app.extensions import db
from app.models import Author, Comment, IdempotencyKey, Post
from app.models.types import utcnow
from app.services import auth as auth_service
from app.services import idempotency
from tests.api.helpers import assert_problem

PASSWORD = "correct horse battery"
POSTS = "/api/v1/posts"


@pytest.fixture
def editor(client: FlaskClient, cheap_hashes: None) -> tuple[Author, dict[str, str]]:
    author = auth_service.create_author("keyed_editor", "Keyed Editor", PASSWORD, role="editor")
    response = client.post("/api/v1/auth/token", json={"username": "keyed_editor", "password": PASSWORD})
    return author, {"Authorization": f"Bearer {response.get_json()['access_token']}"}


def body(title: str = "Keyed post") -> dict[str, object]:
    return {"title": title, "summary": "s", "body": "b", "category": category_slug(), "tags": []}


def category_slug() -> str:
    return str(db.session.execute(text("SELECT slug FROM categories ORDER BY id LIMIT 1")).scalar_one())


def count(model: type, **where: object) -> int:
    query = select(func.count()).select_from(model)
    for name, value in where.items():
        query = query.where(getattr(model, name) == value)
    return int(db.session.execute(query).scalar_one())


def keyed(auth: dict[str, str], key: str) -> dict[str, str]:
    return {**auth, "Idempotency-Key": key}


def test_a_retry_gets_the_first_answer_and_writes_nothing(client: FlaskClient, editor: tuple) -> None:
    _, auth = editor
    first = client.post(POSTS, json=body(), headers=keyed(auth, '"k-1"'))
    assert first.status_code == 201, first.data
    assert "Idempotent-Replayed" not in first.headers
    for spelling in ('"k-1"', "k-1"):  # a Structured Field String, or the bare token
        again = client.post(POSTS, json=body(), headers=keyed(auth, spelling))
        assert again.status_code == 201
        assert again.data == first.data
        assert again.headers["Location"] == first.headers["Location"]
        assert again.headers["Idempotent-Replayed"] == "true"
        assert again.headers["Cache-Control"] == "no-store"
        assert "RateLimit" not in again.headers  # a replay writes nothing and counts for nothing
    assert count(Post, title="Keyed post") == 1
    # The same JSON re-serialized by a client (key order, spacing) is the same request.
    reordered = json.dumps(dict(reversed(list(body().items()))), indent=2)
    respaced = client.post(POSTS, data=reordered, content_type="application/json", headers=keyed(auth, '"k-1"'))
    assert respaced.status_code == 201 and respaced.headers["Idempotent-Replayed"] == "true"
    assert count(Post, title="Keyed post") == 1


def test_comment_retries_are_one_comment(client: FlaskClient, editor: tuple) -> None:
    _, auth = editor
    post_id = db.session.execute(select(Post.id).where(Post.visible).limit(1)).scalar_one()
    before = count(Comment, post_id=post_id)
    answers = [
        client.post(f"{POSTS}/{post_id}/comments", json={"body": "Once"}, headers=keyed(auth, '"c-1"'))
        for _ in range(3)
    ]
    assert [a.status_code for a in answers] == [201, 201, 201]
    assert answers[0].data == answers[1].data == answers[2].data
    assert count(Comment, post_id=post_id) == before + 1
    # The same key on another path is another request: refused, not replayed.
    other = db.session.execute(select(Post.id).where(Post.visible, Post.id != post_id).limit(1)).scalar_one()
    assert_problem(
        client.post(f"{POSTS}/{other}/comments", json={"body": "Once"}, headers=keyed(auth, '"c-1"')),
        422,
        "idempotency_key_reused",
    )


def test_the_same_key_with_another_body_is_422(client: FlaskClient, editor: tuple) -> None:
    _, auth = editor
    assert client.post(POSTS, json=body("First"), headers=keyed(auth, '"k-2"')).status_code == 201
    reused = client.post(POSTS, json=body("Second"), headers=keyed(auth, '"k-2"'))
    assert_problem(reused, 422, "idempotency_key_reused")
    assert count(Post, title="Second") == 0


def test_keys_are_per_author(client: FlaskClient, editor: tuple, cheap_hashes: None) -> None:
    _, auth = editor
    auth_service.create_author("other_editor", "Other", PASSWORD, role="editor")
    token = client.post("/api/v1/auth/token", json={"username": "other_editor", "password": PASSWORD}).get_json()
    other = {"Authorization": f"Bearer {token['access_token']}"}
    assert client.post(POSTS, json=body("Mine"), headers=keyed(auth, '"shared"')).status_code == 201
    assert client.post(POSTS, json=body("Mine"), headers=keyed(other, '"shared"')).status_code == 201
    assert count(Post, title="Mine") == 2


def test_the_answer_is_kept_by_the_writes_own_transaction(
    client: FlaskClient, editor: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The write commits, then its answer is lost (here: the view fails after the service
    returned; in production: a worker killed before it answered). The retry gets the answer."""
    import app.api.writes as views

    _, auth = editor
    real = views.json_response

    def lost(*args: object, **kwargs: object) -> object:
        raise ConnectionResetError("the answer never left")

    monkeypatch.setattr(views, "json_response", lost)
    failed = client.post(POSTS, json=body("Committed"), headers=keyed(auth, '"k-3"'))
    assert failed.status_code == 500
    assert count(Post, title="Committed") == 1
    monkeypatch.setattr(views, "json_response", real)
    retry = client.post(POSTS, json=body("Committed"), headers=keyed(auth, '"k-3"'))
    assert retry.status_code == 201 and retry.headers["Idempotent-Replayed"] == "true"
    assert retry.get_json()["title"] == "Committed"
    assert count(Post, title="Committed") == 1


def test_a_failed_write_leaves_the_key_free(client: FlaskClient, editor: tuple) -> None:
    _, auth = editor
    wrong = {**body("Fixed later"), "category": "no-such-category"}
    assert_problem(client.post(POSTS, json=wrong, headers=keyed(auth, '"k-4"')), 422, "validation_failed")
    assert count(IdempotencyKey, key="k-4") == 0
    assert client.post(POSTS, json=body("Fixed later"), headers=keyed(auth, '"k-4"')).status_code == 201


@pytest.fixture
def other_connection(pg_admin_url: str) -> Iterator[psycopg.Connection]:  # type: ignore[type-arg]
    base, _, _ = pg_admin_url.rpartition("/")
    with psycopg.connect(f"{base}/readwire_test", autocommit=True) as conn:
        yield conn


def test_a_key_whose_request_is_in_flight_is_409(
    client: FlaskClient,
    editor: tuple,
    other_connection: psycopg.Connection,  # type: ignore[type-arg]
) -> None:
    """Another transaction holds the key (as the first request does while it runs)."""
    author, auth = editor
    lock = idempotency.lock_id(author.id, "k-5")
    other_connection.execute("SELECT pg_advisory_lock(%s)", (lock,))
    try:
        busy = client.post(POSTS, json=body("Busy"), headers=keyed(auth, '"k-5"'))
        assert_problem(busy, 409, "idempotency_key_in_use")
        assert busy.headers["Retry-After"] == "1"
        assert count(Post, title="Busy") == 0
    finally:
        other_connection.execute("SELECT pg_advisory_unlock(%s)", (lock,))
    assert client.post(POSTS, json=body("Busy"), headers=keyed(auth, '"k-5"')).status_code == 201


def test_keys_expire_and_are_swept(app: Flask, client: FlaskClient, editor: tuple) -> None:
    _, auth = editor
    assert client.post(POSTS, json=body("Old"), headers=keyed(auth, '"k-6"')).status_code == 201
    kept = db.session.execute(select(IdempotencyKey).where(IdempotencyKey.key == "k-6")).scalar_one()
    assert kept.expires_at - kept.created_at >= timedelta(hours=24)
    db.session.execute(update(IdempotencyKey).values(expires_at=utcnow() - timedelta(seconds=1)))
    db.session.commit()
    # Past its expiry the key is new again: another body is accepted, not a 422.
    assert client.post(POSTS, json=body("New"), headers=keyed(auth, '"k-6"')).status_code == 201
    assert client.post(POSTS, json=body("Other"), headers=keyed(auth, '"k-7"')).status_code == 201
    db.session.execute(
        update(IdempotencyKey).where(IdempotencyKey.key == "k-7").values(expires_at=utcnow() - timedelta(seconds=1))
    )
    db.session.commit()
    assert idempotency.purge_expired() == 1
    assert [k.key for k in db.session.execute(select(IdempotencyKey)).scalars()] == ["k-6"]


@pytest.mark.parametrize(
    "value",
    ['""', '"', "", " ", "a b", "é", '"a"b"', '"a\\x"', "a,b", '"' + "x" * 256 + '"', "x" * 256, '"tab\there"'],
)
def test_a_malformed_key_is_400_and_writes_nothing(client: FlaskClient, editor: tuple, value: str) -> None:
    _, auth = editor
    before = count(Post)
    assert_problem(client.post(POSTS, json=body(), headers=keyed(auth, value)), 400, "invalid_idempotency_key")
    assert count(Post) == before


def test_two_keys_are_400(client: FlaskClient, editor: tuple) -> None:
    _, auth = editor
    headers = [*auth.items(), ("Idempotency-Key", '"a"'), ("Idempotency-Key", '"b"')]
    assert_problem(client.post(POSTS, json=body(), headers=headers), 400, "invalid_idempotency_key")


def test_the_document_describes_the_key(client: FlaskClient) -> None:
    document = client.get("/api/v1/openapi.json").get_json()
    for path in ("/api/v1/posts", "/api/v1/posts/{post_id}/comments"):
        operation = document["paths"][path]["post"]
        assert {"$ref": "#/components/parameters/Idempotency-Key"} in operation["parameters"], path
        assert {"409", "422", "201"} <= set(operation["responses"])
        assert "Idempotent-Replayed" in operation["responses"]["201"]["headers"]
    assert "Idempotency-Key" in document["info"]["description"]
