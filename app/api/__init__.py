"""HTTP API: one blueprint module per resource, mounted under /api/v1 (probes at the root)."""

from __future__ import annotations

from typing import Any

from flask import Flask
from flask.sessions import SessionInterface
from werkzeug.routing import BaseConverter, ValidationError

from app.http import API_PREFIX
from app.schemas.writes import SLUG_PATTERN
from app.services.auth import USERNAME_PATTERN

__all__ = ["API_PREFIX", "SlugConverter", "UsernameConverter", "register_api"]


class NoSessions(SessionInterface):
    """The API keeps no cookie session (tokens travel in headers), so never build one: Flask's
    default signs and parses a cookie session on every request, reads included."""

    def open_session(self, app: Flask, request: Any) -> None:
        return None

    def save_session(self, app: Flask, session: Any, response: Any) -> None:
        return None


class SlugConverter(BaseConverter):
    """Category and tag slugs as the write path creates them (lowercase words and hyphens, up
    to 80 characters). Anything else cannot name one: 404 from routing, before any SQL (a NUL,
    say, would otherwise reach PostgreSQL) and without a cache entry."""

    regex = SLUG_PATTERN.strip("^$")
    max_length = 80

    def to_python(self, value: str) -> str:
        if len(value) > self.max_length:
            raise ValidationError()
        return value


class UsernameConverter(BaseConverter):
    """Usernames as accounts are created (app/services/auth.py)."""

    regex = USERNAME_PATTERN.pattern.strip("^$")


def register_api(app: Flask) -> None:
    from app.api import auth, directory, docs, feeds, health, posts, streams, syndication, writes

    app.session_interface = NoSessions()
    app.url_map.converters.update(slug=SlugConverter, username=UsernameConverter)
    for module in (feeds, syndication, streams, posts, directory, auth, writes, docs):
        app.register_blueprint(module.bp, url_prefix=API_PREFIX)
    app.register_blueprint(health.bp)
