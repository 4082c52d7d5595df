"""An embedded app (SQLite file, in-process cache) with a route that fails, for the answers the
API itself never gives on purpose (500), and a capture of the JSON log lines."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from app import create_app
from app.extensions import db
from app.observability.logs import JsonFormatter
from tests.conftest import SECRET

AppFactory = Callable[..., Flask]


@pytest.fixture(scope="package", autouse=True)
def fresh_session_pool(app: Flask) -> None:
    """tests/cache restarts PostgreSQL (the database-down test); connections the session app
    pooled before that are dead, and the first request to use one would answer 503."""
    with app.app_context():
        db.engine.dispose()


@pytest.fixture
def make_embedded(tmp_path: Path) -> AppFactory:
    def make(**overrides: Any) -> Flask:
        app = create_app(
            {"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'obs.sqlite3'}", "SECRET_KEY": SECRET, **overrides}
        )

        def boom() -> str:
            logging.getLogger("app.test").warning("about to fail")
            raise RuntimeError("secret internals")

        app.add_url_rule("/api/v1/boom", "boom", boom)
        return app

    return make


@pytest.fixture
def embedded(make_embedded: AppFactory) -> Flask:
    return make_embedded(REQUEST_LOG=True)  # the access line is off by default


class LogLines(list[dict[str, Any]]):
    def of(self, logger: str) -> list[dict[str, Any]]:
        return [line for line in self if line["logger"] == logger]


@pytest.fixture
def captured(embedded: Flask) -> Iterator[Callable[[], LogLines]]:
    """Every line our JSON handler writes from here on, parsed (its stream is swapped for a buffer)."""
    handler = next(h for h in logging.getLogger("readwire.access").handlers if isinstance(h.formatter, JsonFormatter))
    assert isinstance(handler, logging.StreamHandler)
    buffer = io.StringIO()
    previous = handler.setStream(buffer)

    def read() -> LogLines:
        return LogLines(json.loads(line) for line in buffer.getvalue().splitlines())

    try:
        yield read
    finally:
        handler.setStream(previous)  # type: ignore[arg-type]
