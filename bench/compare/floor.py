"""The FastAPI peer's work on Readwire's stack: what Flask + gunicorn's gevent worker + psycopg 3 +
redis-py cost for exactly the peer's miss (bench/compare/peer.py), with nothing of Readwire's.

    PEER_DATABASE_URL=postgresql://... PEER_REDIS_URL=redis://.../2 \\
        gunicorn -c gunicorn.conf.py bench.compare.floor:app

The side-by-side run (bench/compare/run.py) serves it under Readwire's own gunicorn.conf.py, on
the peer's data and URLs (its cursor is the peer's plain position), with a Redis database of its
own. Per request, as the peer: a Redis GET of the URL's bytes; on a miss the scope's id (kept in
process after its first lookup), the page and its tags in two prepared statements on a connection
kept in a pool (never opened on the request path), the items built as the same dicts, orjson, a
Redis SET with a TTL. No signed cursors, validators, single flight, generations, problem+json
or metrics: so `floor / FastAPI` on misses is the most any Flask + gunicorn gevent app doing the
peer's work gets on this machine, the ceiling of `Readwire / FastAPI` on this stack.
"""

from __future__ import annotations

import os
import queue
import re
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
import psycopg
import redis
from flask import Flask, Response, request

from bench.compare.peer import _PAGE, _SCOPE, _TAGS, JSON_OPTIONS, TOP, decode_cursor, encode_cursor, item

TTL = int(os.environ.get("PEER_CACHE_TTL", "30"))
POOL_SIZE = int(os.environ.get("PEER_POOL_SIZE", "32"))
# psycopg's placeholders for the peer's asyncpg statements ($1 -> %(p1)s: the scope, $4, comes first).
_PAGE_PG = {kind: re.sub(r"\$([1-4])\b", r"%(p\1)s", sql) for kind, sql in _PAGE.items()}
_TAGS_PG = _TAGS.replace("$1::bigint[]", "%s")
_SCOPE_PG = {kind: sql.replace("$1", "%s") for kind, sql in _SCOPE.items()}


class Pool:
    """POOL_SIZE connections opened once (lazily, then kept); a greenlet waits for a free one
    (gunicorn's gevent worker patches `queue`)."""

    def __init__(self, url: str, size: int) -> None:
        self.url, self.free, self.opened, self.size = url, queue.LifoQueue[psycopg.Connection[Any]](), 0, size

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        if self.free.empty() and self.opened < self.size:
            self.opened += 1
            conn = psycopg.connect(self.url, autocommit=True, prepare_threshold=0)
        else:
            conn = self.free.get()
        try:
            yield conn
        finally:
            self.free.put(conn)


def create_app() -> Flask:
    app = Flask(__name__)
    pool = Pool(os.environ["PEER_DATABASE_URL"], POOL_SIZE)
    cache = redis.Redis.from_url(os.environ["PEER_REDIS_URL"], max_connections=POOL_SIZE * 2)
    scopes: dict[tuple[str, str], int] = {}

    def scope_id(kind: str, key: str) -> int | None:
        found = scopes.get((kind, key))
        if found is None:
            with pool.connection() as conn:
                row = conn.execute(_SCOPE_PG[kind], (key,)).fetchone()
            if row is not None:
                found = scopes[(kind, key)] = row[0]
        return found

    def page_body(kind: str, scope: int, cursor: str | None, limit: int) -> bytes:
        position, after_id = decode_cursor(cursor) if cursor else TOP
        args = {"p1": position, "p2": after_id, "p3": limit + 1, "p4": scope}
        with pool.connection() as conn:
            rows = conn.execute(_PAGE_PG[kind], args).fetchall()
            more = len(rows) > limit
            items = [item(row) for row in rows[:limit]]
            by_id = {i["id"]: i for i in items}
            if by_id:
                for post_id, tag_id, slug, name in conn.execute(_TAGS_PG, (list(by_id),)):
                    by_id[post_id]["tags"].append({"id": tag_id, "slug": slug, "name": name})
        last = items[-1] if items else None
        next_cursor = encode_cursor(last["published_at"], last["id"]) if more and last else None
        meta = {"limit": limit, "next_cursor": next_cursor, "prev_cursor": None}
        return orjson.dumps({"data": items, "meta": meta}, option=JSON_OPTIONS)

    def problem(status: int, detail: str) -> Response:
        body = orjson.dumps({"status": status, "detail": detail})
        return Response(body, status, mimetype="application/problem+json")

    def feed(kind: str, key: str | None) -> Response:
        cache_key = f"peer:{request.path}?{request.query_string.decode()}"
        cached = cache.get(cache_key)
        if cached is not None:
            return Response(cached, mimetype="application/json")
        try:
            limit = int(request.args.get("limit", "20"))
        except ValueError:
            return problem(422, "limit must be an integer.")
        if not 1 <= limit <= 100:
            return problem(422, "limit must be 1-100.")
        scope = 0
        if key is not None:
            found = scope_id(kind, key)
            if found is None:
                return problem(404, f"No {kind} '{key}'.")
            scope = found
        try:
            body = page_body(kind, scope, request.args.get("cursor"), limit)
        except (ValueError, struct.error):
            return problem(400, "Malformed cursor.")
        cache.set(cache_key, body, ex=TTL)
        return Response(body, mimetype="application/json")

    app.add_url_rule("/api/v1/feed", "feed", lambda: feed("all", None))
    app.add_url_rule("/api/v1/categories/<slug>/feed", "category", lambda slug: feed("category", slug))
    app.add_url_rule("/api/v1/tags/<slug>/feed", "tag", lambda slug: feed("tag", slug))
    app.add_url_rule("/api/v1/authors/<slug>/feed", "author", lambda slug: feed("author", slug))
    app.add_url_rule("/healthz", "healthz", lambda: {"status": "ok"})
    return app


app = create_app() if os.environ.get("PEER_DATABASE_URL") else None
