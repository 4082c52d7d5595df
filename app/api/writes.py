"""Writes: create, edit, publish/unpublish and delete posts (editors, own posts); comment."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, request, url_for
from flask_jwt_extended import jwt_required

from app.api.auth import current_author_id, editor_required
from app.http.idempotency import idempotent
from app.http.respond import json_response, no_store
from app.ratelimit import rate_limited
from app.schemas.writes import comment_create, load_json, post_create, post_update
from app.services import writes

bp = Blueprint("writes", __name__)


def _by_author() -> str:
    return f"author:{current_author_id()}"


bp.after_request(no_store)  # a write's answer is for its author only


# Limits apply after authentication (they count per author); a request without a valid token is
# refused before it costs anything but a signature check. A retry with an Idempotency-Key that
# was used already is answered before the limit (it writes nothing, so it counts for nothing).


def _post_url(post: dict[str, Any]) -> str:
    return url_for("posts.post_detail", post_id=post["id"])


@bp.post("/posts")
@editor_required
@idempotent(201, _post_url)
@rate_limited("write", _by_author)
def create_post() -> Response:
    post = writes.create_post(current_author_id(), load_json(post_create, request))
    response = json_response(post, status=201)
    response.headers["Location"] = _post_url(post)
    return response


@bp.patch("/posts/<int:post_id>")
@editor_required
@rate_limited("write", _by_author)
def update_post(post_id: int) -> Response:
    changes = load_json(post_update, request)
    return json_response(writes.update_post(current_author_id(), post_id, changes))


@bp.delete("/posts/<int:post_id>")
@editor_required
@rate_limited("write", _by_author)
def delete_post(post_id: int) -> Response:
    writes.delete_post(current_author_id(), post_id)
    return Response(status=204)


@bp.post("/posts/<int:post_id>/comments")
@jwt_required()
@idempotent(201, lambda comment: None)
@rate_limited("write", _by_author)
def create_comment(post_id: int) -> Response:
    comment = load_json(comment_create, request)
    return json_response(writes.add_comment(current_author_id(), post_id, comment["body"]), status=201)
