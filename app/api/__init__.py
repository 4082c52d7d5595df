"""HTTP API: one blueprint module per resource, all mounted under /api/v1."""

from __future__ import annotations

from flask import Flask


def register_api(app: Flask) -> None:
    pass
