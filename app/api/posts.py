"""Posts: detail, bulk get, and each post's comment thread (all cached)."""

from __future__ import annotations

from flask import Blueprint, Response

from app.extensions import cursors
from app.http.cached import cached_json, cached_page
from app.http.render import pick, pick_all
from app.pagination import position_params
from app.schemas.params import bulk_posts_query, comments_query, post_query, query_params
from app.services import posts
from app.services.comments import comments_page

bp = Blueprint("posts", __name__)


@bp.get("/posts/<int:post_id>")
def post_detail(post_id: int) -> Response:
    params = query_params(post_query)
    compute = lambda: pick(posts.get_post(post_id), params.get("fields"))  # noqa: E731
    return cached_json(f"post/{post_id}", [f"post:{post_id}"], params, "post", compute)


@bp.get("/posts")
def posts_by_ids() -> Response:
    params = query_params(bulk_posts_query)
    ids, fields = params["ids"], params.get("fields")
    # Any change to a visible post bumps "feed", so one generation covers every id asked.
    key_params = {**params, "ids": ",".join(map(str, ids))}
    return cached_json("posts", ["feed"], key_params, "feed", lambda: {"data": pick_all(posts.get_posts(ids), fields)})


@bp.get("/posts/<int:post_id>/comments")
def post_comments(post_id: int) -> Response:
    params = query_params(comments_query)
    scope = f"comments:{post_id}"
    after = cursors.decode(params.get("cursor"), scope)
    compute = lambda: comments_page(post_id, after, params["limit"])  # noqa: E731
    namespaces = [f"post:{post_id}", f"comments:{post_id}"]
    return cached_page(
        f"comments/{post_id}",
        namespaces,
        params,
        "post",
        compute,
        scope=scope,
        after=after,
        growing=None,
        key_params=position_params(params, after),
    )
