"""Structured logs: one JSON object per line; an access line per request with its id, method,
path, status, duration, endpoint and cache outcome; other records of a request carry its id."""

from __future__ import annotations

import logging
from collections.abc import Callable

from flask import Flask

from app.observability.logs import JsonFormatter
from tests.observability.conftest import LogLines


def test_one_access_line_per_request_with_the_request_fields(embedded: Flask, captured: Callable[[], LogLines]) -> None:
    client = embedded.test_client()
    ok = client.get("/healthz?probe=1", headers={"X-Request-ID": "abc-1"})
    missing = client.get("/api/v1/nowhere")
    access = captured().of("readwire.access")
    assert len(access) == 2
    first, second = access
    assert first["request_id"] == "abc-1" == ok.headers["X-Request-ID"]
    assert (first["method"], first["path"], first["query"], first["status"]) == ("GET", "/healthz", "probe=1", 200)
    assert first["endpoint"] == "health.healthz" and first["level"] == "info" and first["cache"] is None
    assert isinstance(first["duration_ms"], float) and 0 <= first["duration_ms"] < 5000
    assert first["ts"].endswith("Z") and "T" in first["ts"]
    assert (second["status"], second["endpoint"]) == (404, "none")
    assert second["request_id"] == missing.headers["X-Request-ID"]


def test_records_logged_during_a_request_carry_its_id(embedded: Flask, captured: Callable[[], LogLines]) -> None:
    response = embedded.test_client().get("/api/v1/boom", headers={"X-Request-ID": "boom-2"})
    assert response.status_code == 500
    lines = captured()
    warning = lines.of("app.test")[0]
    assert (warning["level"], warning["msg"], warning["request_id"]) == ("warning", "about to fail", "boom-2")
    error = lines.of("app.errors")[0]
    assert error["request_id"] == "boom-2" and "RuntimeError: secret internals" in error["exc"]  # in the log only
    assert lines.of("readwire.access")[0]["status"] == 500


def test_the_access_log_is_off_by_default(make_embedded, captured: Callable[[], LogLines]) -> None:  # type: ignore[no-untyped-def]
    make_embedded().test_client().get("/healthz")
    assert captured().of("readwire.access") == []


def test_a_record_is_one_line_whatever_its_message() -> None:
    record = logging.LogRecord("app.x", logging.WARNING, __file__, 1, "two\nlines %s", ("\u2603",), None)
    record.fields = {"detail": {"nested": True}}
    line = JsonFormatter().format(record)
    assert "\n" not in line and '"msg":"two\\nlines \u2603"' in line and '"detail":{"nested":true}' in line


def test_our_loggers_do_not_repeat_through_the_root_logger(embedded: Flask) -> None:
    for name in ("app", "readwire", "readwire.access"):
        logger = logging.getLogger(name)
        assert logger.propagate is False
        assert any(isinstance(h.formatter, JsonFormatter) for h in logger.handlers)
