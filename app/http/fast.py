"""Near hits answered before Flask: a WSGI middleware in front of the Flask app.

A cache hit through Flask paid about as much for the request machinery (request context,
routing, query parsing, werkzeug's Response and its header checks) as for the cache itself. So
the first time a URL goes through its view, `cached()` (app/http/cached.py) tells this layer what
the view named: the page's address and cache namespaces, the Flask endpoint and path (metrics,
access log). The next GET of exactly that path and query string asks the page cache the same
questions in the same order (Pages.near_entry: pending invalidations, epoch and generations from
the near counters, the versioned key, a fresh near copy) and answers with the same status line,
headers and body as the view would, 200 or 304.

Anything it cannot answer with certainty goes to Flask unchanged: another method, a URL the
view never named (or one whose key depends on more than the URL: /popular's snapshot), a host
the view never served (its root URL unknown), no fresh near copy (a Redis hit, a stale entry, a
miss), the cache unreachable or an outbox to drain.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from flask import Flask
from werkzeug.http import HTTP_STATUS_CODES

from app.cache.pages import Pages
from app.http.respond import CONTENT_TYPES, OUTCOME_HEADER, client_has, filled_body, http_date, known_root
from app.observability.logs import CACHE_OUTCOME, ENDPOINT, PATH
from app.urls import ROOT_URL

log = logging.getLogger(__name__)
StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]
FAST = "readwire.fast"  # WSGI environ key: set when this layer answered (tests)
FAST_HITS = "fast_hits"  # app.extensions key


class Route(NamedTuple):
    """What a view named for one URL (path and query string)."""

    endpoint: str  # the Flask endpoint (metrics label, access log)
    path: str  # request.path (access log)
    namespaces: tuple[str, ...]
    page: str  # the page's cache address (app/cache/keys.py: address)


def _status_line(status: int) -> str:
    """As werkzeug spells it (`200 OK`, `404 NOT FOUND`)."""
    return f"{status} {HTTP_STATUS_CODES.get(status, 'UNKNOWN').upper()}"


_STATUS_LINES: dict[int, str] = {}
_NOT_MODIFIED = _status_line(304)


class FastHits:
    """The middleware (see the module docstring)."""

    def __init__(self, wsgi_app: WsgiApp, pages: Pages, config: dict[str, Any], max_routes: int) -> None:
        self.wsgi_app = wsgi_app
        self.pages = pages
        self.config = config  # read per request, like the view does (tests change it)
        self.max_routes = max_routes
        self.routes: dict[tuple[str, str], Route] = {}

    def knows(self, environ: dict[str, Any]) -> bool:
        return (environ.get("PATH_INFO", ""), environ.get("QUERY_STRING", "")) in self.routes

    def learn(self, environ: dict[str, Any], route: Route) -> None:
        """Remember what the view named for this request's URL (called by cached())."""
        if len(self.routes) >= self.max_routes:
            self.routes.clear()
        self.routes[(environ.get("PATH_INFO", ""), environ.get("QUERY_STRING", ""))] = route

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ["REQUEST_METHOD"] != "GET":
            return self.wsgi_app(environ, start_response)
        route = self.routes.get((environ.get("PATH_INFO", ""), environ.get("QUERY_STRING", "")))
        if route is None:
            return self.wsgi_app(environ, start_response)
        config = self.config
        root = known_root(environ, config["PUBLIC_BASE_URL"])
        if root is None:  # a host the view has not answered (yet): its root URL is the view's business
            return self.wsgi_app(environ, start_response)
        try:
            entry = self.pages.near_entry(route.page, route.namespaces, time.time())
        except Exception:  # not this layer's to answer: the view fails the same way, as problem+json
            log.exception("fast path: left to the view")
            entry = None
        if entry is None:
            return self.wsgi_app(environ, start_response)
        environ[FAST] = True
        environ[ENDPOINT] = route.endpoint
        environ[PATH] = route.path
        rendered = entry.rendered
        cache_control = config["HTTP_CACHE_CONTROL"]
        if client_has(environ, rendered.etag, entry.modified_at):
            environ[CACHE_OUTCOME] = "not_modified"
            start_response(
                _NOT_MODIFIED,
                [
                    ("ETag", rendered.etag),
                    ("Cache-Control", cache_control),
                    ("Vary", "Accept-Encoding"),
                    (OUTCOME_HEADER, "not_modified"),
                ],
            )
            return []
        environ[CACHE_OUTCOME] = "near_hit"
        body = filled_body(rendered, root) if rendered.templated else rendered.body
        media_type = rendered.media_type
        status = _STATUS_LINES.get(rendered.status)
        if status is None:
            status = _STATUS_LINES[rendered.status] = _status_line(rendered.status)
        headers = [
            ("Content-Type", CONTENT_TYPES.get(media_type, media_type)),
            ("Content-Length", str(len(body))),
            ("ETag", rendered.etag),
            ("Cache-Control", cache_control),
            ("Vary", "Accept-Encoding"),
            (OUTCOME_HEADER, "near_hit"),
            ("Last-Modified", http_date(entry.modified_at)),
        ]
        if rendered.link:
            headers.append(("Link", rendered.link.replace(ROOT_URL, root)))
        start_response(status, headers)
        return [body]


def register_fast_hits(app: Flask) -> None:
    """In front of the Flask app itself (inside CORS and observability, which then treat a fast
    answer like any other); only when near entries exist (a Redis store)."""
    from app.extensions import page_cache

    pages = page_cache.pages(app)
    if not app.config["FAST_HITS"] or pages.near is None:
        return
    fast = FastHits(app.wsgi_app, pages, app.config, int(app.config["FAST_HIT_ROUTES"]))
    app.extensions[FAST_HITS] = fast
    app.wsgi_app = fast  # type: ignore[method-assign]
