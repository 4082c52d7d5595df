"""Posts: detail, bulk get, and each post's comment thread (all cached)."""

from __future__ import annotations

from flask import Blueprint, Response

from app.api._http import decode_cursor, pick, pick_all, rendered_json, rendered_page
from app.cache.pages import Rendered, page_cache, serve
from app.errors import ApiError, not_found
from app.schemas.params import MAX_ID, bulk_posts_query, comments_query, post_query, query_params
from app.services import posts
from app.services.comments import comments_page

bp = Blueprint("posts", __name__)


def _missing_post(post_id: int) -> ApiError:
    return not_found(f"No published post with id {post_id}.")


@bp.get("/posts/<int:post_id>")
def post_detail(post_id: int) -> Response:
    params = query_params(post_query)
    if post_id > MAX_ID:
        raise _missing_post(post_id)

    def compute() -> Rendered:
        post = posts.get_post(post_id)
        if post is None:
            raise _missing_post(post_id)
        return rendered_json(pick(post, params.get("fields")))

    return serve(f"post/{post_id}", [f"post:{post_id}"], params, page_cache().policies["post"], compute)


@bp.get("/posts")
def posts_by_ids() -> Response:
    params = query_params(bulk_posts_query)
    ids, fields = params["ids"], params.get("fields")
    # Any change to a visible post bumps "feed", so one generation covers every id asked.
    key_params = {**params, "ids": ",".join(map(str, ids))}
    return serve(
        "posts",
        ["feed"],
        key_params,
        page_cache().policies["feed"],
        lambda: rendered_json({"data": pick_all(posts.get_posts(ids), fields)}),
    )


@bp.get("/posts/<int:post_id>/comments")
def post_comments(post_id: int) -> Response:
    params = query_params(comments_query)
    scope = f"comments:{post_id}"
    after = decode_cursor(params.get("cursor"), scope)
    if post_id > MAX_ID:
        raise _missing_post(post_id)

    def compute() -> Rendered:
        if not posts.is_visible(post_id):
            raise _missing_post(post_id)
        page = comments_page(post_id, after, params["limit"])
        return rendered_page(page, scope, after, params, growing=None)

    namespaces = [f"post:{post_id}", f"comments:{post_id}"]
    return serve(f"comments/{post_id}", namespaces, params, page_cache().policies["post"], compute)
