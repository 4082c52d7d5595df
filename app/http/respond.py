"""Plain responses and the pieces every cached response shares: conditionals, the stored
rendering's per-request parts, and the validator headers."""

from __future__ import annotations

from email.utils import formatdate, parsedate_to_datetime
from typing import Any
from xml.sax.saxutils import escape as xml_escape

import orjson
from flask import Response, current_app, request

from app.cache.entries import Entry, Rendered
from app.http.render import ATOM, json_bytes
from app.observability.logs import CACHE_OUTCOME
from app.urls import JSON_ROOT_URL, ROOT_URL

__all__ = ["CACHE_OUTCOME"]
CONTENT_TYPES = {ATOM: ATOM + "; charset=utf-8"}
OUTCOME_HEADER = "X-App-Cache"  # what the page cache did, for clients and load tests


def json_response(payload: Any, status: int = 200) -> Response:
    """An uncached JSON answer; the API's own URLs in it (a post's `url`) get this request's root."""
    return Response(with_root(json_bytes(payload)), status=status, mimetype="application/json")


def with_root(body: bytes) -> bytes:
    """A JSON body with its ROOT_URL placeholders (a post's `url`) filled with this request's root."""
    return body.replace(*_fill(root_url(), "application/json")) if JSON_ROOT_URL in body else body


def no_store(response: Response) -> Response:
    """after_request for answers meant for one client only (tokens, a write's result)."""
    response.headers["Cache-Control"] = "no-store"
    return response


def etag_matches(etag: str, header: str | None) -> bool:
    """If-None-Match's weak comparison (RFC 9110 13.1.2): `*`, or any listed tag equal to ours
    once the W/ prefixes are set aside."""
    if not header:
        return False
    if header.strip() == "*":
        return True
    ours = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == ours for tag in header.split(","))


def not_modified_since(modified_at: float, header: str | None) -> bool:
    if not header:
        return False
    try:
        since = parsedate_to_datetime(header).timestamp()
    except (TypeError, ValueError):
        return False
    return int(modified_at) <= since


def client_has(environ: dict[str, Any], etag: str, modified_at: float) -> bool:
    """Whether the client's copy is current: If-None-Match when sent (If-Modified-Since is then
    ignored, RFC 9110 13.1.3), else If-Modified-Since."""
    tags = environ.get("HTTP_IF_NONE_MATCH")
    if tags is not None:
        return etag_matches(etag, tags)
    return not_modified_since(modified_at, environ.get("HTTP_IF_MODIFIED_SINCE"))


_ROOTS: dict[tuple[str, str, str, str], str] = {}


def known_root(environ: dict[str, Any], base: str) -> str | None:
    """The root URL root_url() gave for this environ's scheme, host and script root, if it has
    (without a request: app/http/fast.py)."""
    return _ROOTS.get((base, environ["wsgi.url_scheme"], environ.get("HTTP_HOST", ""), environ.get("SCRIPT_NAME", "")))


def root_url() -> str:
    """The API's root URL for this request (PUBLIC_BASE_URL, else scheme://host[/script root]),
    memoized per host: werkzeug rebuilds and re-quotes it on every access."""
    environ = request.environ
    base = current_app.config["PUBLIC_BASE_URL"]
    key = (base, environ["wsgi.url_scheme"], environ.get("HTTP_HOST", ""), environ.get("SCRIPT_NAME", ""))
    url = _ROOTS.get(key)
    if url is None:
        url = base or request.root_url.rstrip("/")
        if len(_ROOTS) >= 4096:
            _ROOTS.clear()
        _ROOTS[key] = url
    return url


_FILLS: dict[tuple[str, str], tuple[bytes, bytes]] = {}
# Templated bodies split at their placeholders, per body (the near cache hands back the same
# bytes object on every hit, and bytes cache their hash): a hit then joins the parts around this
# request's root, ~1 µs for a 15 kB page, where searching the body (bytes.replace) took 15-35 µs.
_PARTS: dict[bytes, list[bytes]] = {}
_PARTS_MAX = 512  # entries (each ~ one page body); cleared when full, like the memos below


def _fill(root: str, media_type: str) -> tuple[bytes, bytes]:
    """(placeholder, replacement) of ROOT_URL in a body of this media type, escaped for its
    syntax: raw NUL in XML, the string start `"\\u0000` in JSON (where orjson escapes NUL, and a
    `"` before the escape can only be the start of a string value)."""
    key = (root, media_type)
    fill = _FILLS.get(key)
    if fill is None:
        if media_type == ATOM:
            fill = (ROOT_URL.encode(), xml_escape(root, {'"': "&quot;"}).encode())
        else:
            fill = (JSON_ROOT_URL, b'"' + orjson.dumps(root)[1:-1])
        if len(_FILLS) >= 1024:
            _FILLS.clear()
        _FILLS[key] = fill
    return fill


def filled_body(rendered: Rendered, root: str) -> bytes:
    """The body with its ROOT_URL placeholders replaced by this request's root URL."""
    placeholder, replacement = _fill(root, rendered.media_type)
    body = rendered.body
    parts = _PARTS.get(body)
    if parts is None:
        parts = body.split(placeholder)
        if len(_PARTS) >= _PARTS_MAX:
            _PARTS.clear()
        _PARTS[body] = parts
    return replacement.join(parts)


_HTTP_DATES: dict[int, str] = {}


def http_date(timestamp: float) -> str:
    """IMF-fixdate of a time, memoized per second: formatdate costs ~3 µs and pages share a few
    Last-Modified values."""
    second = int(timestamp)
    value = _HTTP_DATES.get(second)
    if value is None:
        if len(_HTTP_DATES) >= 4096:
            _HTTP_DATES.clear()
        value = _HTTP_DATES[second] = formatdate(second, usegmt=True)
    return value


def validators(response: Response, etag: str, cache_control: str, outcome: str) -> Response:
    """What a 200 and its 304 share (RFC 9110 15.4.5: ETag, Cache-Control, Vary)."""
    headers = response.headers
    headers["ETag"] = etag
    headers["Cache-Control"] = cache_control
    headers["Vary"] = "Accept-Encoding"
    headers[OUTCOME_HEADER] = outcome
    return response


def entry_response(entry: Entry, cache_control: str, outcome: str, age: float | None) -> Response:
    """The stored rendering as this request's response (root URL filled in)."""
    rendered = entry.rendered
    root = root_url() if rendered.templated or rendered.link else ""
    body = filled_body(rendered, root) if rendered.templated else rendered.body
    media_type = rendered.media_type
    response = Response(body, status=rendered.status, content_type=CONTENT_TYPES.get(media_type, media_type))
    validators(response, rendered.etag, cache_control, outcome)
    response.headers["Last-Modified"] = http_date(entry.modified_at)
    if rendered.link:
        response.headers["Link"] = rendered.link.replace(ROOT_URL, root)
    if age is not None:
        response.headers["Age"] = str(max(0, int(age)))
    return response


def not_modified(entry: Entry, cache_control: str) -> Response:
    """No Last-Modified: with an ETag it does not guide cache updates (RFC 9110 15.4.5)."""
    return validators(Response(status=304), entry.rendered.etag, cache_control, "not_modified")
