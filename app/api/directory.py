"""Categories, tags and authors (all cached)."""

from __future__ import annotations

from flask import Blueprint, Response, request

from app.api._http import rendered_json
from app.cache.pages import Rendered, page_cache, serve
from app.errors import not_found
from app.schemas.params import no_query, parse_query, tags_query
from app.services import directory

bp = Blueprint("directory", __name__)


@bp.get("/categories")
def categories() -> Response:
    params = parse_query(no_query, request.args)
    policy = page_cache().policies["directory"]
    return serve(
        "categories", ["directory"], params, policy, lambda: rendered_json({"data": directory.list_categories()})
    )


@bp.get("/tags")
def tags() -> Response:
    params = parse_query(tags_query, request.args)
    limit = params["limit"]
    policy = page_cache().policies["directory"]
    return serve(
        "tags",
        ["directory"],
        params,
        policy,
        lambda: rendered_json({"data": directory.list_tags(limit), "meta": {"limit": limit}}),
    )


@bp.get("/authors/<username>")
def author(username: str) -> Response:
    params = parse_query(no_query, request.args)

    def compute() -> Rendered:
        found = directory.get_author(username)
        if found is None:
            raise not_found(f"No author '{username}'.")
        return rendered_json(found)

    return serve(f"author/{username}", [f"author:{username}"], params, page_cache().policies["directory"], compute)
