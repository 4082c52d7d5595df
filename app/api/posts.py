"""Posts: detail, bulk get, and each post's comment thread."""

from __future__ import annotations

from flask import Blueprint, Response, request

from app.api._http import decode_cursor, json_response, paginated_response
from app.errors import not_found
from app.schemas.params import MAX_ID, bulk_posts_query, no_query, page_query, parse_query
from app.services import posts
from app.services.comments import comments_page

bp = Blueprint("posts", __name__)


def _missing_post(post_id: int) -> Exception:
    return not_found(f"No published post with id {post_id}.")


@bp.get("/posts/<int:post_id>")
def post_detail(post_id: int) -> Response:
    parse_query(no_query, request.args)
    post = posts.get_post(post_id) if post_id <= MAX_ID else None
    if post is None:
        raise _missing_post(post_id)
    return json_response(post)


@bp.get("/posts")
def posts_by_ids() -> Response:
    params = parse_query(bulk_posts_query, request.args)
    return json_response({"data": posts.get_posts(params["ids"])})


@bp.get("/posts/<int:post_id>/comments")
def post_comments(post_id: int) -> Response:
    params = parse_query(page_query, request.args)
    if post_id > MAX_ID or not posts.is_visible(post_id):
        raise _missing_post(post_id)
    scope = f"comments:{post_id}"
    after = decode_cursor(params.get("cursor"), scope)
    page = comments_page(post_id, after, params["limit"])
    return paginated_response(page, scope, after, params, growing=None)
