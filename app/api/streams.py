"""Server-Sent Events: post.created, post.updated, post.deleted, globally and per category, tag
and author, resumable with Last-Event-ID (app/push)."""

from __future__ import annotations

from flask import Blueprint, Response, request

from app.errors import ApiError, unavailable
from app.extensions import push
from app.push import InvalidPosition
from app.ratelimit import client_address
from app.schemas.params import no_query, query_params
from app.services import directory
from app.services.posts import ScopeKind

bp = Blueprint("streams", __name__)
STREAM_RETRY_AFTER = 5  # s: what a refused client should wait before opening another stream


def _stream(kind: ScopeKind, key: str | None = None) -> Response:
    query_params(no_query)
    state = push.state()
    try:
        position = state.position(request.headers.get("Last-Event-ID"))
    except InvalidPosition:
        detail = "Last-Event-ID is not a position this server issued; reconnect without it."
        raise ApiError(
            400, "invalid_cursor", detail, title="Invalid cursor", errors={"Last-Event-ID": [detail]}
        ) from None
    if key is not None:
        directory.scope_ref(kind, key)  # 404 for an unknown category, tag or author
    if state.slots.full():
        raise unavailable("This server holds as many streams as it can; retry later.")
    token = state.slots.acquire(client_address())
    if token is None:
        raise ApiError(
            429,
            "rate_limited",
            f"Too many open streams from this address (at most {state.slots.per_client}).",
            title="Too many requests",
            headers={"Retry-After": str(STREAM_RETRY_AFTER)},
        )
    return state.open("all" if key is None else f"{kind}:{key}", position, token)


@bp.get("/stream")
def global_stream() -> Response:
    return _stream("all")


@bp.get("/categories/<slug:slug>/stream")
def category_stream(slug: str) -> Response:
    return _stream("category", slug)


@bp.get("/tags/<slug:slug>/stream")
def tag_stream(slug: str) -> Response:
    return _stream("tag", slug)


@bp.get("/authors/<username:username>/stream")
def author_stream(username: str) -> Response:
    return _stream("author", username)
