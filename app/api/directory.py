"""Categories, tags and authors (all cached)."""

from __future__ import annotations

from flask import Blueprint, Response

from app.http.cached import cached_json
from app.schemas.params import no_query, query_params, tags_query
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


@bp.get("/authors/<username:username>")
def author(username: str) -> Response:
    params = query_params(no_query)
    compute = lambda: directory.get_author(username)  # noqa: E731
    return cached_json(f"author/{username}", [f"author:{username}"], params, "directory", compute)
