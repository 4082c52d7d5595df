"""Flask CLI commands (`flask --app app seed`, ...)."""

from __future__ import annotations

from flask import Flask


def register_cli(app: Flask) -> None:
    from app.services.seed import seed_command

    app.cli.add_command(seed_command)
