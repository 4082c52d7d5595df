"""Structured logs: one JSON object per line on stderr, with the request id when there is one.

The app owns two logger trees: `app` (its modules, `logging.getLogger(__name__)`) and
`readwire` (`readwire.access`: one line per request; `readwire.outbox`: gunicorn's drain).
Neither propagates to the root logger, so a root handler (gunicorn's, a test runner's) never
prints a line twice.
"""

from __future__ import annotations

import logging
import logging.config
import os
import threading
import time
from typing import Any

import orjson
from flask import has_request_context, request

from app.compat import logging_start_time

REQUEST_ID = "readwire.request_id"  # WSGI environ key: this request's id (accepted or generated)
CACHE_OUTCOME = "readwire.cache"  # WSGI environ key: what the page cache did (app/http/cached.py)
# WSGI environ keys set by an answer made without a Flask request (app/http/fast.py): the
# endpoint and path the view's request had.
ENDPOINT = "readwire.endpoint"
PATH = "readwire.path"
_APPLIED: list[str] = []  # the level configured last (dictConfig replaces every handler: do it once)


class JsonFormatter(logging.Formatter):
    """`{"ts", "level", "logger", "msg", "request_id"?, ...record.fields, "exc"?}`."""

    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._prefix = ""

    def _timestamp(self, created: float) -> str:
        """RFC 3339 UTC with milliseconds; the part up to the second is computed once a second."""
        second = int(created)
        if second != self._second:
            self._second, self._prefix = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._prefix}.{int((created - second) * 1000):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": self._timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None)
        if request_id is not None:
            entry["request_id"] = request_id
        fields = getattr(record, "fields", None)
        if fields:
            entry.update(fields)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(entry, default=str).decode()


class AccessRecord(logging.LogRecord):
    """The access line's record, built directly: `Logger.info` would walk the stack for the
    caller and look up the thread and process names, half the cost of an access line on a
    cache hit. Every standard attribute is still set, so any formatter can render it."""

    def __init__(self, name: str, request_id: str, fields: dict[str, Any]) -> None:
        self.created = now = time.time()
        self.msecs = (now - int(now)) * 1000
        self.relativeCreated = (now - logging_start_time()) * 1000
        self.name, self.msg, self.args = name, "request", ()
        self.levelno, self.levelname = logging.INFO, "INFO"
        self.pathname, self.filename, self.module, self.lineno, self.funcName = __file__, "logs.py", "logs", 0, "access"
        self.exc_info = self.exc_text = self.stack_info = None
        self.thread, self.threadName, self.process, self.processName = threading.get_ident(), None, _PID[0], None
        self.request_id, self.fields = request_id, fields


_PID = [os.getpid()]
os.register_at_fork(after_in_child=lambda: _PID.__setitem__(0, os.getpid()))


class RequestIdFilter(logging.Filter):
    """Tags records logged while a request is handled with that request's id."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id") and has_request_context():
            record.request_id = request.environ.get(REQUEST_ID)
        return True


def logging_config(level: str) -> dict[str, Any]:
    handler = {"handlers": ["stderr"], "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": RequestIdFilter}},
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "json",
                "filters": ["request_id"],
            }
        },
        "loggers": {
            "app": {"level": level, **handler},
            "readwire": {"level": level, **handler},
            # Access lines are INFO whatever LOG_LEVEL says; REQUEST_LOG=0 turns them off.
            "readwire.access": {"level": "INFO", **handler},
        },
    }


def configure_logging(level: str) -> None:
    """Apply the JSON logging config once per process (again only if the level changes):
    dictConfig closes every existing handler, which must not happen per app in a test run."""
    if [level] == _APPLIED:
        return
    logging.config.dictConfig(logging_config(level))
    _APPLIED[:] = [level]
