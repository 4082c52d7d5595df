"""Categories, tags and authors (all cached)."""

from __future__ import annotations

from flask import Blueprint, Response

from app.api._http import decode_cursor, rendered_json, rendered_page
from app.cache.pages import Rendered, page_cache, serve
from app.errors import not_found
from app.schemas.params import no_query, page_query, query_params, tags_query
from app.services import directory

bp = Blueprint("directory", __name__)


@bp.get("/categories")
def categories() -> Response:
    params = query_params(no_query)
    policy = page_cache().policies["directory"]
    return serve(
        "categories", ["directory"], params, policy, lambda: rendered_json({"data": directory.list_categories()})
    )


@bp.get("/tags")
def tags() -> Response:
    params = query_params(tags_query)
    limit = params["limit"]
    policy = page_cache().policies["directory"]
    return serve(
        "tags",
        ["directory"],
        params,
        policy,
        lambda: rendered_json({"data": directory.list_tags(limit), "meta": {"limit": limit}}),
    )


@bp.get("/authors")
def authors() -> Response:
    """Every author (the list view: no counters), in id order, keyset-paginated."""
    params = query_params(page_query)
    after = decode_cursor(params.get("cursor"), "authors")

    def compute() -> Rendered:
        return rendered_page(directory.authors_page(after, params["limit"]), "authors", after, params, growing=None)

    return serve("authors", ["directory"], params, page_cache().policies["directory"], compute)


@bp.get("/authors/<username:username>")
def author(username: str) -> Response:
    params = query_params(no_query)

    def compute() -> Rendered:
        found = directory.get_author(username)
        if found is None:
            raise not_found(f"No author '{username}'.")
        return rendered_json(found)

    return serve(f"author/{username}", [f"author:{username}"], params, page_cache().policies["directory"], compute)
