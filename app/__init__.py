"""Readwire: a cache-heavy, read-mostly feed API."""

from __future__ import annotations

from typing import Any

from flask import Flask

from app.config import load_settings


def create_app(overrides: dict[str, Any] | None = None) -> Flask:
    """Application factory: settings from the environment, then the small register_* steps."""
    app = Flask(__name__, static_folder=None)  # an API: no static files, no /static route
    app.config.from_mapping(load_settings(overrides))
    register_extensions(app)
    register_blueprints(app)
    register_errorhandlers(app)
    register_commands(app)
    register_fast_hits(app)  # innermost: in front of Flask itself
    register_cors(app)
    register_observability(app)  # last: the outermost middleware, so it times everything
    return app


def register_extensions(app: Flask) -> None:
    from app import models  # noqa: F401  (registers the tables for Alembic)
    from app.extensions import cursors, db, invalidation, jwt, limiter, migrate, page_cache, push, replicas

    db.init_app(app)
    migrate.init_app(app, db, directory=str(app.root_path + "/../migrations"), render_as_batch=True)
    with app.app_context():
        invalidation.init_app(app, db.engine)
        push.init_app(app, db.engine, invalidation.after_commit)
    replicas.init_app(app, db)
    register_deadline(app)
    page_cache.init_app(app, invalidation.invalidator(app), replicas.router(app))
    cursors.init_app(app)
    limiter.init_app(app)
    jwt.init_app(app)
    from app.services import popular
    from app.services.idempotency import listen

    listen()  # keyed writes record their answer in their own transaction
    popular.init_app(app)  # which /popular snapshots this process knows exist


def register_deadline(app: Flask) -> None:
    """The client-side database deadline (app/deadline.py) on every engine, and each request's budget."""
    from app import deadline
    from app.extensions import db, replicas

    with app.app_context():
        deadline.bind(db.engine)
    router = replicas.router(app)
    for replica in router.replicas if router is not None else ():
        deadline.bind(replica.engine)
    deadline.init_app(app)


def register_observability(app: Flask) -> None:
    from app.observability.hooks import register_observability as register

    register(app)


def register_fast_hits(app: Flask) -> None:
    from app.http.fast import register_fast_hits as register

    register(app)


def register_cors(app: Flask) -> None:
    from app.cors import register_cors as register

    register(app)


def register_blueprints(app: Flask) -> None:
    from app.api import register_api

    register_api(app)


def register_errorhandlers(app: Flask) -> None:
    from app.errors import register_error_handlers

    register_error_handlers(app)


def register_commands(app: Flask) -> None:
    from app.cli import register_cli

    register_cli(app)
