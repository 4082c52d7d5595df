"""CORS for browser clients of the API: a WSGI middleware that appends the headers as the
response starts (decided from the environ alone; cheaper than flask-cors, measured).

- Public reads (GET/HEAD under /api/v1, errors included): `Access-Control-Allow-Origin: *`,
  never with credentials, and the headers a client needs exposed. The answer is the same for
  every origin (and for requests without one), so a shared cache may keep it: no `Vary: Origin`.
- Preflights (OPTIONS): reads are allowed with the conditional and request-id headers; writes
  only from the origins in CORS_WRITE_ORIGINS (echoed, with `Vary: Origin`), still without
  credentials (bearer tokens travel in Authorization, never cookies).
- Writes and sign-in: allowed origins get their origin echoed; others get no CORS headers.
- Operational endpoints (/healthz, /readyz, /metrics) get none.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask

from app.api import API_PREFIX

EXPOSED = (
    "ETag, Last-Modified, Link, Age, Retry-After, RateLimit, RateLimit-Policy, X-Request-ID, Location, "
    "Idempotent-Replayed"
)
READ_METHODS = "GET, HEAD, OPTIONS"
READ_HEADERS = "Accept, If-None-Match, If-Modified-Since, Last-Event-ID, X-Request-ID"
WRITE_METHODS = "GET, HEAD, OPTIONS, POST, PATCH, DELETE"
WRITE_HEADERS = "Accept, Authorization, Content-Type, Idempotency-Key, If-None-Match, If-Modified-Since, X-Request-ID"

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]
Headers = list[tuple[str, str]]


class Cors:
    def __init__(self, wsgi_app: WsgiApp, write_origins: Iterable[str], max_age: int) -> None:
        self.wsgi_app = wsgi_app
        self.prefix = API_PREFIX + "/"
        self.write_origins = frozenset(write_origins)
        self.read: Headers = [("Access-Control-Allow-Origin", "*"), ("Access-Control-Expose-Headers", EXPOSED)]
        self.read_preflight: Headers = [
            ("Access-Control-Allow-Origin", "*"),
            ("Access-Control-Allow-Methods", READ_METHODS),
            ("Access-Control-Allow-Headers", READ_HEADERS),
            ("Access-Control-Max-Age", str(max_age)),
            ("Vary", "Origin"),  # a write preflight on the same path is answered per origin
        ]
        self.max_age = str(max_age)

    def headers_for(self, environ: dict[str, Any]) -> Headers | None:
        """The CORS headers this request's answer gets (None: none at all)."""
        if not environ["PATH_INFO"].startswith(self.prefix):
            return None
        method = environ["REQUEST_METHOD"]
        if method == "GET" or method == "HEAD":
            return self.read
        origin = environ.get("HTTP_ORIGIN", "")
        if method == "OPTIONS":
            if environ.get("HTTP_ACCESS_CONTROL_REQUEST_METHOD") in ("GET", "HEAD"):
                return self.read_preflight
            if origin not in self.write_origins:
                return [("Vary", "Origin")]
            return [
                ("Access-Control-Allow-Origin", origin),
                ("Access-Control-Allow-Methods", WRITE_METHODS),
                ("Access-Control-Allow-Headers", WRITE_HEADERS),
                ("Access-Control-Max-Age", self.max_age),
                ("Vary", "Origin"),
            ]
        if origin in self.write_origins:
            return [
                ("Access-Control-Allow-Origin", origin),
                ("Access-Control-Expose-Headers", EXPOSED),
                ("Vary", "Origin"),
            ]
        return None

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        extra = self.headers_for(environ)
        if extra is None:
            return self.wsgi_app(environ, start_response)

        def start(status: str, headers: Headers, exc_info: Any = None) -> Any:
            headers.extend(extra)
            return start_response(status, headers, exc_info)

        return self.wsgi_app(environ, start)


def register_cors(app: Flask) -> None:
    app.wsgi_app = Cors(  # type: ignore[method-assign]
        app.wsgi_app, app.config["CORS_WRITE_ORIGINS"], int(app.config["CORS_MAX_AGE"])
    )
