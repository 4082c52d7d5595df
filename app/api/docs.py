"""The OpenAPI document and its reference page (Swagger UI), built once per app and served
with an ETag (both change only with a deploy)."""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import re
from importlib.resources import files
from pathlib import Path
from weakref import WeakKeyDictionary

import orjson
from flask import Blueprint, Flask, Response, current_app, request

from app.http.respond import etag_matches

bp = Blueprint("docs", __name__)

# Clients may keep either for five minutes, then revalidate (cheap: a 304).
CACHE_CONTROL = "public, max-age=300"
_BUILT: WeakKeyDictionary[Flask, dict[str, tuple[bytes, str]]] = WeakKeyDictionary()
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


def _built(name: str) -> tuple[bytes, str]:
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    built = _BUILT.setdefault(app, {})
    if name not in built:
        if name == "openapi":
            from app.openapi import build_document

            body = orjson.dumps(build_document(app), option=orjson.OPT_INDENT_2)
        else:
            body = render_reference_page()
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
