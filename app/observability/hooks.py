"""Request ids, the JSON access log and Prometheus metrics, as one WSGI middleware.

On the way in it takes the client's X-Request-ID (printable ASCII, at most 128 characters) or
makes one, and notes the time. Flask calls start_response while the request context is still
pushed, after every after_request hook; there the middleware appends X-Request-ID to the
headers (every answer: errors and 304s included), records the metrics under the Flask endpoint
name and writes the access line. A middleware rather than Flask hooks: no per-request hook
dispatch and no header validation for values built here, which halves the layer's cost.
OBSERVABILITY=0 installs nothing (the benchmark baseline); METRICS_ENABLED and REQUEST_LOG
switch the two costly parts.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
from collections.abc import Callable, Iterable
from time import perf_counter
from typing import Any

from flask import Flask

from app.compat import current_request
from app.observability.logs import CACHE_OUTCOME, ENDPOINT, PATH, REQUEST_ID, AccessRecord, configure_logging
from app.observability.metrics import RequestMetrics, Sampler

_VALID_ID = re.compile(r"[\x20-\x7e]{1,128}")
# Generated ids: 64 random bits per process, then a counter (32 hex digits in all). Unique across
# workers and restarts without a random draw per request; they are ids, not secrets.
_ID_STATE: list[Any] = []


def _reseed() -> None:
    _ID_STATE[:] = [os.urandom(8).hex(), itertools.count()]


_reseed()
os.register_at_fork(after_in_child=_reseed)


def new_request_id() -> str:
    prefix, counter = _ID_STATE
    return f"{prefix}{next(counter):016x}"


StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class Observed:
    """The middleware (see the module docstring)."""

    def __init__(
        self, wsgi_app: WsgiApp, metrics: RequestMetrics | None, sampler: Sampler | None, access: logging.Logger | None
    ) -> None:
        self.wsgi_app = wsgi_app
        self.metrics, self.sampler, self.access = metrics, sampler, access

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        started = perf_counter()
        given = environ.get("HTTP_X_REQUEST_ID")
        request_id = given if given is not None and _VALID_ID.fullmatch(given) else new_request_id()
        environ[REQUEST_ID] = request_id

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            headers.append(("X-Request-ID", request_id))
            if self.metrics is not None or self.access is not None:
                self._record(environ, int(status[:3]), started)
            return start_response(status, headers, exc_info)

        return self.wsgi_app(environ, start)

    def _record(self, environ: dict[str, Any], status: int, started: float) -> None:
        now = perf_counter()
        elapsed = now - started
        request = current_request()
        if request is not None:
            rule = request.url_rule
            endpoint = rule.endpoint if rule is not None else "none"  # bounded: never the raw path
        else:  # answered before Flask (app/http/fast.py), or Flask never got that far
            endpoint = environ.get(ENDPOINT, "none")
        outcome = environ.get(CACHE_OUTCOME)
        if self.metrics is not None and self.sampler is not None:
            self.metrics.observe(endpoint, status, elapsed, outcome)
            self.sampler.maybe_sample(now)
        access = self.access
        if access is not None and access.isEnabledFor(logging.INFO):
            fields = {
                "method": environ["REQUEST_METHOD"],
                "path": request.path if request is not None else environ.get(PATH, environ.get("PATH_INFO")),
                "query": environ.get("QUERY_STRING") or None,
                "status": status,
                "duration_ms": round(elapsed * 1000, 3),
                "endpoint": endpoint,
                "cache": outcome,
            }
            access.handle(AccessRecord(access.name, environ[REQUEST_ID], fields))


def register_observability(app: Flask) -> None:
    from app.extensions import db, page_cache
    from app.extensions import metrics as metrics_extension

    configure_logging(app.config["LOG_LEVEL"])
    if not app.config["OBSERVABILITY"]:
        return
    with app.app_context():
        recording = metrics_extension.init_app(app, db.engine, page_cache.store)
    metrics, sampler = recording if recording is not None else (None, None)
    access = logging.getLogger("readwire.access") if app.config["REQUEST_LOG"] else None
    app.wsgi_app = Observed(app.wsgi_app, metrics, sampler, access)  # type: ignore[method-assign]
