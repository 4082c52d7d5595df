"""Sign-in: token issue and refresh, every token failure as problem+json, and `create-editor`."""

from __future__ import annotations

from datetime import timedelta

import jwt as pyjwt
import pytest
from flask import Flask
from flask.testing import FlaskClient
from flask_jwt_extended import create_access_token, decode_token
from sqlalchemy import func, select

from app.extensions import db
from app.models import Author, CacheOutbox, Comment, Post
from app.services import auth as auth_service
from tests.api.helpers import assert_problem

PASSWORD = "correct horse battery"
TOKEN_URL = "/api/v1/auth/token"
REFRESH_URL = "/api/v1/auth/refresh"


@pytest.fixture
def editor(client: FlaskClient, cheap_hashes: None) -> Author:
    return auth_service.create_author("token_editor", "Token Editor", PASSWORD, role="editor")


def sign_in(client: FlaskClient, username: str, password: str = PASSWORD) -> dict[str, object]:
    response = client.post(TOKEN_URL, json={"username": username, "password": password})
    assert response.status_code == 200, response.data
    return response.get_json()  # type: ignore[no-any-return]


def bearer(token: object) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def can_write(client: FlaskClient, token: object) -> bool:
    """Whether `token` gets past authentication and authorization (an empty PATCH is then a 422)."""
    return client.patch("/api/v1/posts/1", json={}, headers=bearer(token)).status_code == 422


def test_token_issue(client: FlaskClient, editor: Author) -> None:
    response = client.post(TOKEN_URL, json={"username": "token_editor", "password": PASSWORD})
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_json()
    assert list(body) == ["access_token", "refresh_token", "token_type", "expires_in"]
    assert body["token_type"] == "Bearer" and body["expires_in"] == 15 * 60
    access, refresh = decode_token(body["access_token"]), decode_token(body["refresh_token"])
    assert (access["sub"], access["role"], access["type"]) == (str(editor.id), "editor", "access")
    assert (refresh["sub"], refresh["type"]) == (str(editor.id), "refresh")
    assert refresh["exp"] - refresh["iat"] == 7 * 86_400
    assert can_write(client, body["access_token"])


def test_passwords_are_stored_as_scrypt_hashes(client: FlaskClient) -> None:
    author = auth_service.create_author("hashed_one", "Hashed", PASSWORD)
    assert author.password_hash is not None and author.password_hash.startswith("scrypt:32768:8:1$")
    assert PASSWORD not in author.password_hash
    assert sign_in(client, "hashed_one")["access_token"]


def test_wrong_credentials_are_one_401(client: FlaskClient, editor: Author) -> None:
    seeded = db.session.execute(select(Author.username).where(Author.password_hash.is_(None)).limit(1)).scalar_one()
    bodies = []
    for username, password in [("token_editor", "wrong password"), ("nobody_here", PASSWORD), (seeded, PASSWORD)]:
        response = client.post(TOKEN_URL, json={"username": username, "password": password})
        bodies.append(assert_problem(response, 401, "unauthorized"))
        assert response.headers["Cache-Control"] == "no-store"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert bodies[0] == bodies[1] == bodies[2]


@pytest.mark.parametrize(
    ("body", "field"),
    [({"username": "x"}, "password"), ({"password": "x"}, "username"), ({"username": "x", "password": "y", "scope": "all"}, "scope"),
     ({"username": "x", "password": ""}, "password"), ({"username": "x" * 41, "password": "y"}, "username"),
     ({"username": "x", "password": "y" * 1025}, "password"), ({"username": 1, "password": "y"}, "username")],
)  # fmt: skip
def test_bad_token_requests_are_422(client: FlaskClient, body: dict[str, object], field: str) -> None:
    assert field in assert_problem(client.post(TOKEN_URL, json=body), 422, "validation_failed")["errors"]


def test_token_request_must_be_json(client: FlaskClient) -> None:
    form = client.post(TOKEN_URL, data={"username": "x", "password": "y"})
    assert_problem(form, 415, "unsupported_media_type")
    assert_problem(client.post(TOKEN_URL, data="{", content_type="application/json"), 400, "invalid_json")


def test_refresh_gives_a_new_access_token_with_the_current_role(client: FlaskClient, cheap_hashes: None) -> None:
    auth_service.create_author("soon_editor", "Soon Editor", PASSWORD)
    tokens = sign_in(client, "soon_editor")
    assert not can_write(client, tokens["access_token"])  # an author, not an editor: 403
    auth_service.make_editor("soon_editor", PASSWORD)

    response = client.post(REFRESH_URL, headers=bearer(tokens["refresh_token"]))
    assert response.status_code == 200, response.data
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_json()
    assert set(body) == {"access_token", "token_type", "expires_in"}
    assert decode_token(body["access_token"])["role"] == "editor"
    assert can_write(client, body["access_token"])


def test_refresh_needs_a_refresh_token(client: FlaskClient, editor: Author) -> None:
    tokens = sign_in(client, "token_editor")
    assert_problem(client.post(REFRESH_URL), 401, "unauthorized")
    assert_problem(client.post(REFRESH_URL, headers=bearer(tokens["access_token"])), 401, "unauthorized")
    # ... and a refresh token is not an access token.
    assert_problem(
        client.patch("/api/v1/posts/1", json={}, headers=bearer(tokens["refresh_token"])), 401, "unauthorized"
    )


def test_refresh_fails_once_the_account_cannot_sign_in(client: FlaskClient, editor: Author) -> None:
    tokens = sign_in(client, "token_editor")
    editor.password_hash = None
    db.session.commit()
    assert_problem(client.post(REFRESH_URL, headers=bearer(tokens["refresh_token"])), 401, "unauthorized")


def test_expired_tampered_and_foreign_tokens_are_401(app: Flask, client: FlaskClient, editor: Author) -> None:
    claims = {"role": "editor"}
    expired = create_access_token(str(editor.id), additional_claims=claims, expires_delta=timedelta(seconds=-1))
    valid = create_access_token(str(editor.id), additional_claims=claims)
    head, payload, signature = valid.split(".")
    tampered = f"{head}.{payload}.{signature[::-1]}"
    foreign = pyjwt.encode(
        {"sub": str(editor.id), "role": "editor", "type": "access"}, "another-secret-of-32-bytes-or-more!!"
    )
    unsigned = pyjwt.encode({"sub": str(editor.id), "role": "editor", "type": "access"}, None, algorithm="none")
    assert can_write(client, valid)
    for token in (expired, tampered, foreign, unsigned, "a.b.c", ""):
        response = client.patch("/api/v1/posts/1", json={}, headers=bearer(token))
        body = assert_problem(response, 401, "unauthorized")
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert "Signature" not in body["detail"]  # the decoder's own message is not echoed
    expired_body = client.patch("/api/v1/posts/1", json={}, headers=bearer(expired)).get_json()
    assert "expired" in expired_body["detail"]


# --- flask create-editor -----------------------------------------------------------------------


def test_create_editor_creates_an_editor_who_can_sign_in(app: Flask, client: FlaskClient, cheap_hashes: None) -> None:
    runner = app.test_cli_runner()
    result = runner.invoke(
        args=["create-editor", "cli_editor", "--display-name", "Cli Editor"], input=f"{PASSWORD}\n{PASSWORD}\n"
    )
    assert result.exit_code == 0, result.output
    assert "Created editor 'cli_editor'" in result.output
    author = db.session.execute(select(Author).where(Author.username == "cli_editor")).scalar_one()
    assert (author.role, author.display_name, author.post_count) == ("editor", "Cli Editor", 0)
    assert can_write(client, sign_in(client, "cli_editor")["access_token"])


def test_create_editor_promotes_an_existing_author(app: Flask, client: FlaskClient, cheap_hashes: None) -> None:
    seeded = db.session.execute(select(Author).where(Author.role == "author").limit(1)).scalar_one()
    name, count = seeded.display_name, seeded.post_count
    result = app.test_cli_runner().invoke(args=["create-editor", seeded.username], input=f"{PASSWORD}\n{PASSWORD}\n")
    assert result.exit_code == 0, result.output
    assert "Promoted editor" in result.output
    db.session.refresh(seeded)
    assert (seeded.role, seeded.display_name, seeded.post_count) == ("editor", name, count)
    assert decode_token(sign_in(client, seeded.username)["access_token"])["role"] == "editor"


def test_create_editor_reads_one_piped_line_or_the_environment(
    app: Flask, client: FlaskClient, cheap_hashes: None
) -> None:
    """`echo pw | make editor NAME=x` (README): one line is the password, not asked twice (which
    printed Aborted! when piped); EDITOR_PASSWORD wins over stdin."""
    runner = app.test_cli_runner()
    piped = runner.invoke(args=["create-editor", "piped_editor"], input=f"{PASSWORD}\n")
    assert piped.exit_code == 0 and "Aborted" not in piped.output, piped.output
    from_env = runner.invoke(
        args=["create-editor", "env_editor"], input="ignored-line\n", env={"EDITOR_PASSWORD": PASSWORD}
    )
    assert from_env.exit_code == 0, from_env.output
    for username in ("piped_editor", "env_editor"):
        assert can_write(client, sign_in(client, username)["access_token"])


@pytest.mark.parametrize(
    ("username", "typed"),
    [
        ("short_pw", "short\nshort\n"),
        ("nothing_piped", "\n"),
        ("Bad Name!", f"{PASSWORD}\n{PASSWORD}\n"),
    ],
)
def test_create_editor_refuses_bad_input(
    app: Flask, client: FlaskClient, cheap_hashes: None, username: str, typed: str
) -> None:
    result = app.test_cli_runner().invoke(args=["create-editor", username], input=typed)
    assert result.exit_code != 0
    assert db.session.execute(select(Author).where(Author.username == username)).first() is None


# --- tokens whose subject is not (or no longer) an author ----------------------------------------

WRITES = [
    ("POST", "/api/v1/posts", {"title": "Ghost", "summary": "s", "body": "b", "category": "technology"}),
    ("PATCH", "/api/v1/posts/{post}", {"title": "Ghost edit"}),
    ("DELETE", "/api/v1/posts/{post}", None),
    ("POST", "/api/v1/posts/{post}/comments", {"body": "Ghost comment"}),
]


def _row_counts() -> tuple[int, int, int]:
    return tuple(  # type: ignore[return-value]
        db.session.execute(select(func.count()).select_from(table)).scalar_one()
        for table in (Post.__table__, Comment.__table__, CacheOutbox.__table__)
    )


def _refused_everywhere(client: FlaskClient, token: str, post_id: int) -> None:
    before = _row_counts()
    for method, path, body in WRITES:
        response = client.open(path.format(post=post_id), method=method, json=body, headers=bearer(token))
        assert_problem(response, 401, "unauthorized")
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="readwire", error="invalid_token"'
    assert _row_counts() == before  # nothing written, not even an outbox row
    title = db.session.execute(select(Post.title).where(Post.id == post_id)).scalar_one()
    assert title != "Ghost edit"


def test_a_deleted_authors_valid_token_is_401_on_every_write(client: FlaskClient, cheap_hashes: None) -> None:
    post_id = db.session.execute(select(Post.id).where(Post.visible).limit(1)).scalar_one()
    ghost = auth_service.create_author("soon_gone", "Soon Gone", PASSWORD, role="editor")
    token = sign_in(client, "soon_gone")["access_token"]
    assert can_write(client, token)
    db.session.delete(ghost)
    db.session.commit()
    _refused_everywhere(client, str(token), post_id)


@pytest.mark.parametrize("sub", ["abc", "1.5", "-1", "", " 1", "0x1", "١", "99999999999999999999999", "007"])
def test_a_token_whose_subject_is_not_an_author_id_is_401(client: FlaskClient, sub: str) -> None:
    post_id = db.session.execute(select(Post.id).where(Post.visible).limit(1)).scalar_one()
    token = create_access_token(sub, additional_claims={"role": "editor"})
    _refused_everywhere(client, token, post_id)
