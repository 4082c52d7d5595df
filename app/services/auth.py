"""Accounts and tokens: password checks, JWT issue/refresh, and editor accounts for the CLI.

Identity in every token is the author id as a canonical decimal string; access tokens carry the
role as a claim, so writes need no role lookup. Every authenticated request loads the author the
token names (`token_author`): a token whose account is gone, or whose subject is not an id this
server issues, is refused (401) before anything is written. Refreshing re-reads the role.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from flask import current_app
from flask_jwt_extended import create_access_token, create_refresh_token
from sqlalchemy import bindparam, select
from werkzeug.security import check_password_hash, generate_password_hash

from app.extensions import db
from app.models import Author
from app.models.types import MAX_ID

USERNAME_PATTERN = re.compile(r"^[a-z0-9_]{1,40}$")
PASSWORD_MIN, PASSWORD_MAX = 8, 1024
# A scrypt hash of a random, discarded secret, in werkzeug's default format and cost: unknown
# usernames are checked against it so they take as long as a wrong password (no user probing).
_DUMMY_HASH = (
    "scrypt:32768:8:1$WCJsQCz4ndYKfGTi$68e5330523e46dc90ad50af3473153f5100d80bdc3b57f37b842f0684fdfacbe"
    "80472ad3f48b5ebc42df3f4a9231e06be9090e9aea4cc6d6ae323b4415ffbf89"
)


class AccountError(ValueError):
    """A username or password that cannot be used for an account (message is user-facing)."""


def find_author(username: str) -> Author | None:
    return db.session.execute(select(Author).where(Author.username == username)).scalar_one_or_none()


def _check_password(password: str) -> None:
    if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        raise AccountError(f"The password must be {PASSWORD_MIN} to {PASSWORD_MAX} characters long.")


def create_author(username: str, display_name: str, password: str | None = None, role: str = "author") -> Author:
    """A new author (optionally able to sign in); committed."""
    if not USERNAME_PATTERN.match(username):
        raise AccountError("Usernames are 1 to 40 lowercase letters, digits or underscores.")
    if find_author(username) is not None:
        raise AccountError(f"The username '{username}' is taken.")
    if password is not None:
        _check_password(password)
    author = Author(
        username=username,
        display_name=display_name[:100],
        role=role,
        password_hash=None if password is None else generate_password_hash(password),
    )
    db.session.add(author)
    db.session.commit()
    return author


def make_editor(username: str, password: str, display_name: str | None = None) -> tuple[Author, bool]:
    """Create the editor `username`, or promote the existing author and set the password.

    Returns the author and whether it was created.
    """
    _check_password(password)
    author = find_author(username)
    if author is None:
        return create_author(username, display_name or username, password, role="editor"), True
    author.role = "editor"
    author.password_hash = generate_password_hash(password)
    if display_name:
        author.display_name = display_name[:100]
    db.session.commit()
    return author, False


def _access_token(author: Author) -> dict[str, Any]:
    lifetime = current_app.config["JWT_ACCESS_TOKEN_EXPIRES"]  # a timedelta, or seconds
    return {
        "access_token": create_access_token(identity=str(author.id), additional_claims={"role": author.role}),
        "token_type": "Bearer",
        "expires_in": int(lifetime.total_seconds() if isinstance(lifetime, timedelta) else lifetime),
    }


def sign_in(username: str, password: str) -> dict[str, Any] | None:
    """Access and refresh tokens for valid credentials, else None (whichever part was wrong)."""
    author = find_author(username)
    if author is None or author.password_hash is None:
        check_password_hash(_DUMMY_HASH, password)  # same cost as a real check
        return None
    if not check_password_hash(author.password_hash, password):
        return None
    tokens = _access_token(author)
    tokens["refresh_token"] = create_refresh_token(identity=str(author.id))
    return {key: tokens[key] for key in ("access_token", "refresh_token", "token_type", "expires_in")}


def author_id_of(identity: object) -> int | None:
    """The author id a token subject names, if it is one exactly as issued (`str(id)`): no sign,
    space, leading zero or non-ASCII digit, in range. Anything else names nobody."""
    if not isinstance(identity, str) or not (identity.isascii() and identity.isdigit()):
        return None
    author_id = int(identity)
    return author_id if 0 < author_id <= MAX_ID and str(author_id) == identity else None


# Built once: every authenticated request runs it.
_TOKEN_AUTHOR = select(Author).where(Author.id == bindparam("author_id")).with_for_update(read=True, key_share=True)


def token_author(identity: object) -> Author | None:
    """The author a token names, or None when it names none (malformed or deleted account).

    The row is locked FOR KEY SHARE until the request's transaction ends, the lock the write's own
    foreign keys would take: the account cannot be deleted between this check and the commit.
    """
    author_id = author_id_of(identity)
    if author_id is None:
        return None
    return db.session.execute(_TOKEN_AUTHOR, {"author_id": author_id}).scalar_one_or_none()


def refresh_access(author: Author) -> dict[str, Any] | None:
    """A new access token for a refresh token's author, with the role as it is now.

    None when the account can no longer sign in (password removed).
    """
    if author.password_hash is None:
        return None
    return _access_token(author)
