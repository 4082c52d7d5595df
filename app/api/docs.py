"""The OpenAPI document and its reference page, built once per process and served with an
ETag (both change only with a deploy)."""

from __future__ import annotations

import hashlib
from importlib.resources import files

import orjson
from flask import Blueprint, Response, current_app, request

bp = Blueprint("docs", __name__)

# Clients may keep either for five minutes, then revalidate (cheap: a 304).
CACHE_CONTROL = "public, max-age=300"


def _document() -> tuple[bytes, str]:
    built: tuple[bytes, str] | None = current_app.extensions.get("readwire.openapi")
    if built is None:
        from app.openapi import build_document

        body = orjson.dumps(build_document(current_app), option=orjson.OPT_INDENT_2)
        built = current_app.extensions["readwire.openapi"] = (body, _etag(body))
    return built


def _page() -> tuple[bytes, str]:
    built: tuple[bytes, str] | None = current_app.extensions.get("readwire.docs_page")
    if built is None:
        body = files("app.openapi").joinpath("reference.html").read_bytes()
        built = current_app.extensions["readwire.docs_page"] = (body, _etag(body))
    return built


def _etag(body: bytes) -> str:
    return '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'


def _conditional(body: bytes, etag: str, content_type: str) -> Response:
    matches = request.headers.get("If-None-Match", "")
    if etag in (tag.strip() for tag in matches.split(",")) or matches.strip() == "*":
        response = Response(status=304)
    else:
        response = Response(body, content_type=content_type)
    response.headers["ETag"] = etag
    response.headers["Cache-Control"] = CACHE_CONTROL
    return response


@bp.get("/openapi.json")
def openapi() -> Response:
    return _conditional(*_document(), "application/json")


@bp.get("/docs")
def reference() -> Response:
    return _conditional(*_page(), "text/html; charset=utf-8")
