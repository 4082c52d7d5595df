"""A bare Flask view that answers every GET with one fixed, pre-captured response.

The benchmark's reference point (devstack/serve_bench.py): served by the same gunicorn.conf.py
as the real app, it measures what gunicorn + gevent + Flask cost with no application work, so
``real / bare`` is the share of a worker's capacity left after the app's own hit path.
BARE_RESPONSE names a JSON file ``{"status": 200, "headers": [[name, value], ...], "body": "..."}``
(body as latin-1 text, i.e. the exact bytes) captured from the real app.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from flask import Flask, Response

# Headers the WSGI server sets itself; passing them through would duplicate them.
_HOP_BY_HOP = {"connection", "content-length", "date", "server", "transfer-encoding", "keep-alive"}


def load_response(path: Path) -> tuple[int, list[tuple[str, str]], bytes]:
    captured = json.loads(path.read_text())
    headers = [(name, value) for name, value in captured["headers"] if name.lower() not in _HOP_BY_HOP]
    return int(captured["status"]), headers, captured["body"].encode("latin-1")


def create_bare_app(path: Path) -> Flask:
    status, headers, body = load_response(path)
    app = Flask(__name__)

    @app.get("/", defaults={"anything": ""})
    @app.get("/<path:anything>")
    def bare(anything: str) -> Response:
        return Response(body, status=status, headers=headers)

    return app


app = create_bare_app(Path(os.environ["BARE_RESPONSE"])) if os.environ.get("BARE_RESPONSE") else None
