"""problem+json handlers (placeholder, filled in next)."""

from __future__ import annotations

from flask import Flask


def register_error_handlers(app: Flask) -> None:
    pass
