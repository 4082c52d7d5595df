"""TEMPORARY tracing for the commit-to-event breakdown (not to be committed)."""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

_DIR = os.environ.get("PUSH_TRACE_DIR", "/tmp/pushlat3_trace")
points: dict[str, dict[int, Any]] = {}
_started = False


def mark(name: str, key: int, t: float | None = None) -> None:
    t = time.time() if t is None else t
    points.setdefault(name, {}).setdefault(key, t)
    _start()


def span(name: str, key: int, t: float | None = None) -> None:
    t = time.time() if t is None else t
    d = points.setdefault(name, {})
    cur = d.get(key)
    if cur is None:
        d[key] = [t, t, 1]
    else:
        cur[0] = min(cur[0], t)
        cur[1] = max(cur[1], t)
        cur[2] += 1
    _start()


def _start() -> None:
    global _started
    if _started:
        return
    _started = True

    def flush() -> None:
        while True:
            time.sleep(2.0)
            try:
                with open(f"{_DIR}/{os.getpid()}.json", "w") as f:
                    json.dump({k: {str(i): v for i, v in d.items()} for k, d in points.items()}, f)
            except Exception:
                pass

    threading.Thread(target=flush, daemon=True).start()
