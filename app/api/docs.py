"""The OpenAPI document and its reference page, built once per app and served with an ETag
(both change only with a deploy)."""

from __future__ import annotations

import hashlib
from importlib.resources import files
from weakref import WeakKeyDictionary

import orjson
from flask import Blueprint, Flask, Response, current_app, request

from app.http.respond import etag_matches

bp = Blueprint("docs", __name__)

# Clients may keep either for five minutes, then revalidate (cheap: a 304).
CACHE_CONTROL = "public, max-age=300"
_BUILT: WeakKeyDictionary[Flask, dict[str, tuple[bytes, str]]] = WeakKeyDictionary()


def _built(name: str) -> tuple[bytes, str]:
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    built = _BUILT.setdefault(app, {})
    if name not in built:
        if name == "openapi":
            from app.openapi import build_document

            body = orjson.dumps(build_document(app), option=orjson.OPT_INDENT_2)
        else:
            body = files("app.openapi").joinpath("reference.html").read_bytes()
        built[name] = (body, '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"')
    return built[name]


def _conditional(name: str, content_type: str) -> Response:
    body, etag = _built(name)
    fresh = etag_matches(etag, request.headers.get("If-None-Match"))
    response = Response(status=304) if fresh else Response(body, content_type=content_type)
    response.headers["ETag"] = etag
    response.headers["Cache-Control"] = CACHE_CONTROL
    return response


@bp.get("/openapi.json")
def openapi() -> Response:
    return _conditional("openapi", "application/json")


@bp.get("/docs")
def reference() -> Response:
    return _conditional("docs", "text/html; charset=utf-8")
