"""Categories, tags and authors (all cached)."""

from __future__ import annotations

from flask import Blueprint, Response

from app.extensions import cursors
from app.http.cached import cached_json, cached_page
from app.schemas.params import no_query, page_query, query_params, tags_query
from app.services import directory

bp = Blueprint("directory", __name__)


@bp.get("/categories")
def categories() -> Response:
    params = query_params(no_query)
    return cached_json("categories", ["directory"], params, "directory", lambda: {"data": directory.list_categories()})


@bp.get("/tags")
def tags() -> Response:
    params = query_params(tags_query)
    limit = params["limit"]
    compute = lambda: {"data": directory.list_tags(limit), "meta": {"limit": limit}}  # noqa: E731
    return cached_json("tags", ["directory"], params, "directory", compute)


@bp.get("/authors")
def authors() -> Response:
    """Every author (the list view: no counters), in id order, keyset-paginated."""
    params = query_params(page_query)
    after = cursors.decode(params.get("cursor"), "authors")
    compute = lambda: directory.authors_page(after, params["limit"])  # noqa: E731
    return cached_page(
        "authors", ["directory"], params, "directory", compute, scope="authors", after=after, growing=None
    )


@bp.get("/authors/<username:username>")
def author(username: str) -> Response:
    params = query_params(no_query)
    compute = lambda: directory.get_author(username)  # noqa: E731
    return cached_json(f"author/{username}", [f"author:{username}"], params, "directory", compute)
