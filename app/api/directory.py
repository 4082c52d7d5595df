"""Categories, tags and authors."""

from __future__ import annotations

from flask import Blueprint, Response, request

from app.api._http import json_response
from app.errors import not_found
from app.schemas.params import no_query, parse_query, tags_query
from app.services import directory

bp = Blueprint("directory", __name__)


@bp.get("/categories")
def categories() -> Response:
    parse_query(no_query, request.args)
    return json_response({"data": directory.list_categories()})


@bp.get("/tags")
def tags() -> Response:
    params = parse_query(tags_query, request.args)
    return json_response({"data": directory.list_tags(params["limit"]), "meta": {"limit": params["limit"]}})


@bp.get("/authors/<username>")
def author(username: str) -> Response:
    parse_query(no_query, request.args)
    found = directory.get_author(username)
    if found is None:
        raise not_found(f"No author '{username}'.")
    return json_response(found)
