"""Push: Server-Sent Events of post changes (and, app/push/websub.py, WebSub for feed readers).

- events.py   which posts a transaction changed visibly: rows in post_events, in the write's
              transaction, ids in commit order; the doorbell after the commit
- hub.py      per process: one subscription (Redis pub/sub, PostgreSQL LISTEN when Redis is down),
              one fetcher, a ring of recent events; signed positions (Last-Event-ID)
- streams.py  one stream: replay, live, heartbeats; stream caps per client and per process
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from flask import Flask, Response, current_app, request
from sqlalchemy import event
from sqlalchemy.orm import Session

from app.observability import push_trace as trace
from app.push import events
from app.push.hub import Doorbell, Hub, InvalidPosition, PositionCodec, Publisher
from app.push.streams import StreamSlots, direct_socket, event_stream
from app.push.websub import WebSub
from app.urls import ROOT_URL

__all__ = ["InvalidPosition", "Push", "PushState"]
_WEBSUB = "push.websub"  # session.info: this transaction wrote WebSub outbox rows
_DOORBELL = "push.doorbell"  # session.info: the committed transaction's doorbell, not rung yet


class PushState:
    """One app's push machinery."""

    def __init__(self, app: Flask, engine: Any) -> None:
        config = app.config
        self.codec = PositionCodec(config["SECRET_KEY"])
        self.hub = Hub(engine, self.codec, config)
        self.publisher = Publisher(self.hub, config)
        self.slots = StreamSlots(config)
        self.websub = WebSub(engine, config)
        self.hub.housekeeping.append(self.slots.renew)
        self.site_url: str = config["PUBLIC_SITE_URL"]
        self.api_root: str = config["PUBLIC_BASE_URL"] or ROOT_URL  # ROOT_URL: filled per stream
        self.heartbeat = float(config["SSE_HEARTBEAT"])
        self.retry_ms = int(config["SSE_RETRY_MS"])

    def position(self, header: str | None) -> int | None:
        """The position a Last-Event-ID names (None: none sent); raises InvalidPosition."""
        return None if header is None else self.codec.decode(header.strip())

    def open(self, scope: str, position: int | None, token: str) -> Response:
        self.hub.ensure_started()
        from app.http.respond import root_url  # app.http imports the extensions, which import this

        root = orjson.dumps(root_url())[1:-1]  # this request's root, as it reads inside a JSON string
        body = event_stream(
            self.hub,
            scope,
            position,
            self.heartbeat,
            self.retry_ms,
            lambda: self.slots.release(token),
            root,
            direct_socket(request.environ),
        )
        response = Response(body, mimetype="text/event-stream", direct_passthrough=True)
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Accel-Buffering"] = "no"  # Nginx: pass each event on at once
        return response


class Push:
    """Flask extension: per-app state, and the session listeners (once per process)."""

    key = "push"
    _listening = False

    def init_app(self, app: Flask, engine: Any, after_commit: Callable[..., None]) -> None:
        app.extensions[self.key] = PushState(app, engine)
        if not Push._listening:
            from flask_sqlalchemy.session import Session as session_class

            event.listen(session_class, "after_flush", events.after_flush)
            event.listen(session_class, "before_commit", self._before_commit)
            event.listen(session_class, "after_rollback", self._after_rollback)
            # The doorbell is made before the cache generations are bumped (the page cache's store
            # PUBLISHes it with the bump: app/cache/invalidation.py) and rung after.
            after_commit(self._after_commit, self._doorbell)
            Push._listening = True

    def state(self, app: Flask | None = None) -> PushState:
        state: PushState = (app or current_app).extensions[self.key]
        return state

    def _before_commit(self, session: Session) -> None:
        state = self.state()
        scopes = events.before_commit(session, state.site_url, state.api_root)
        if scopes and state.websub.enabled and state.websub.add(session.connection(), scopes):
            session.info[_WEBSUB] = True
        trace.mark("commit_sent")  # the last before_commit listener: the COMMIT goes next

    def _doorbell(self, session: Session) -> Doorbell | None:
        done = events.committed(session)
        if done is None:
            return None
        bell = session.info[_DOORBELL] = self.state().publisher.doorbell(*done)
        return bell

    def _after_commit(self, session: Session) -> None:
        bell: Doorbell | None = session.info.pop(_DOORBELL, None)
        if bell is not None:
            self.state().publisher.publish(bell)
            trace.end([row[0] for row in bell.batch])
        if session.info.pop(_WEBSUB, False):
            self.state().websub.poke()  # the drain loop announces; the write does not wait for the hub

    @staticmethod
    def _after_rollback(session: Session) -> None:
        events.after_rollback(session)
        session.info.pop(_WEBSUB, None)
