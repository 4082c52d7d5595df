"""The OpenAPI document and its reference page, built once per process and served with an
ETag (both change only with a deploy)."""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import re
from importlib.resources import files
from pathlib import Path

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


# Source-map comments would make devtools ask for files this app does not serve.
_SOURCE_MAP = re.compile(r"^//# sourceMappingURL=.*$|/\*# sourceMappingURL=[^*]*\*/", re.MULTILINE)


def swagger_ui_static() -> Path:
    """Swagger UI's files as the swagger-ui-py package ships them (located, not imported: its
    Python part is a framework adapter this app does not use)."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("swagger-ui-py is not installed (requirements/app.txt)")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


def render_reference_page() -> bytes:
    """reference.html with Swagger UI's CSS and JS inlined: one self-contained response."""
    static = swagger_ui_static()
    script = _SOURCE_MAP.sub("", (static / "swagger-ui-bundle.js").read_text())
    if "</script" in script.lower():  # would end the inline element early
        raise RuntimeError("swagger-ui-bundle.js cannot be inlined: it contains </script")
    page = files("app.openapi").joinpath("reference.html").read_text()
    page = page.replace("__SWAGGER_UI_VERSION__", importlib.metadata.version("swagger-ui-py"))
    page = page.replace("__SWAGGER_UI_CSS__", _SOURCE_MAP.sub("", (static / "swagger-ui.css").read_text()))
    return page.replace("__SWAGGER_UI_JS__", script).encode()


def _page() -> tuple[bytes, str]:
    built: tuple[bytes, str] | None = current_app.extensions.get("readwire.docs_page")
    if built is None:
        body = render_reference_page()
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
