"""HTTP API: one blueprint module per resource, mounted under /api/v1 (probes at the root)."""

from __future__ import annotations

from flask import Flask

from app.pagination import CursorCodec

API_PREFIX = "/api/v1"


def register_api(app: Flask) -> None:
    from app.api import auth, directory, feeds, health, posts, writes

    app.extensions["readwire.cursors"] = CursorCodec(app.config["SECRET_KEY"])
    for module in (feeds, posts, directory, auth, writes):
        app.register_blueprint(module.bp, url_prefix=API_PREFIX)
    app.register_blueprint(health.bp)
