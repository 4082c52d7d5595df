"""HTTP API: one blueprint module per resource, mounted under /api/v1 (probes at the root)."""

from __future__ import annotations

from typing import Any

from flask import Flask
from flask.sessions import SessionInterface

from app.pagination import CursorCodec

API_PREFIX = "/api/v1"


class NoSessions(SessionInterface):
    """The API keeps no cookie session (tokens travel in headers), so never build one: Flask's
    default signs and parses a cookie session on every request, reads included."""

    def open_session(self, app: Flask, request: Any) -> None:
        return None

    def save_session(self, app: Flask, session: Any, response: Any) -> None:
        return None


def register_api(app: Flask) -> None:
    from app.api import auth, directory, feeds, health, posts, writes

    app.session_interface = NoSessions()
    app.extensions["readwire.cursors"] = CursorCodec(app.config["SECRET_KEY"])
    for module in (feeds, posts, directory, auth, writes):
        app.register_blueprint(module.bp, url_prefix=API_PREFIX)
    app.register_blueprint(health.bp)
