"""Sign-in: access and refresh tokens (JWT), and the problem+json answers for bad tokens."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, ParamSpec, TypeVar

from flask import Blueprint, Response, request
from flask_jwt_extended import current_user, get_jwt, jwt_required

from app.errors import ApiError, problem_response
from app.extensions import jwt
from app.http.respond import json_response, no_store
from app.ratelimit import client_address, rate_limited
from app.schemas.writes import load_json, token_request
from app.services import auth

bp = Blueprint("auth", __name__)

P = ParamSpec("P")
R = TypeVar("R")


def unauthorized(detail: str, error: str | None = None) -> ApiError:
    """401 with the RFC 6750 challenge (`error="invalid_token"` when a token was sent but refused)."""
    challenge = 'Bearer realm="readwire"' + (f', error="{error}"' if error else "")
    return ApiError(401, "unauthorized", detail, title="Unauthorized", headers={"WWW-Authenticate": challenge})


def forbidden(detail: str) -> ApiError:
    return ApiError(403, "forbidden", detail, title="Forbidden")


def current_author_id() -> int:
    """The id of the author the request's token names (loaded and checked by `_token_author`)."""
    return int(current_user.id)


def editor_required(view: Callable[P, R]) -> Callable[P, R]:
    """A valid access token whose role claim is `editor` (401 without a token, 403 otherwise)."""

    @wraps(view)
    @jwt_required()
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        if get_jwt().get("role") != "editor":
            raise forbidden("Only editors may write posts.")
        return view(*args, **kwargs)

    return wrapper


bp.after_request(no_store)  # tokens must never sit in a cache


def _by_address() -> str:
    return f"ip:{client_address()}"


@bp.post("/auth/token")
@rate_limited("auth", _by_address)  # before the password check: it is what a guesser repeats
def issue_token() -> Response:
    credentials = load_json(token_request, request)
    tokens = auth.sign_in(credentials["username"], credentials["password"])
    if tokens is None:
        raise unauthorized("The username or password is incorrect.")
    return json_response(tokens)


@bp.post("/auth/refresh")
@rate_limited("auth", _by_address)
@jwt_required(refresh=True)
def refresh_token() -> Response:
    tokens = auth.refresh_access(current_user)
    if tokens is None:
        raise unauthorized("This account can no longer sign in.", "invalid_token")
    return json_response(tokens)


@jwt.user_lookup_loader
def _token_author(header: dict[str, Any], payload: dict[str, Any]) -> Any:
    """Every authenticated request: the token's author must exist (None -> 401 below), so a token
    that outlived its account, or a subject that is not an author id, writes nothing."""
    return auth.token_author(payload.get("sub"))


# Every way a token can be missing or refused answers the contract's problem+json (401); the
# library's own messages are not echoed, so no decoder detail leaks.
@jwt.unauthorized_loader
def _missing_token(reason: str) -> Response:
    return problem_response(unauthorized("Send an access token: 'Authorization: Bearer <token>'."))


@jwt.invalid_token_loader
def _invalid_token(reason: str) -> Response:
    return problem_response(unauthorized("The token is invalid or of the wrong type.", "invalid_token"))


@jwt.expired_token_loader
def _expired_token(header: dict[str, Any], payload: dict[str, Any]) -> Response:
    return problem_response(unauthorized("The token has expired; refresh it or sign in again.", "invalid_token"))


@jwt.revoked_token_loader
@jwt.needs_fresh_token_loader
@jwt.token_verification_failed_loader
@jwt.user_lookup_error_loader
def _refused_token(header: dict[str, Any], payload: dict[str, Any]) -> Response:
    return problem_response(unauthorized("The token was refused.", "invalid_token"))
