"""The FastAPI peer of the side-by-side benchmark (bench/compare/run.py): the same feed pages,
written the way FastAPI's docs and TechEmpower's FastAPI entry tune an app.

    PEER_DATABASE_URL=postgresql://... PEER_REDIS_URL=redis://.../1 \\
        uvicorn bench.compare.peer:app --loop uvloop --http httptools --workers 1 --no-access-log

- uvicorn on uvloop + httptools, one worker per core (the harness gives it one core);
- asyncpg with a pool opened at start-up and kept (min = max: never opens a connection on
  the request path), its statements prepared once per connection (asyncpg's statement cache);
- two queries per page: the page itself (posts joined to author and category, keyset on
  `(published_at, id)` off the same partial indexes Readwire uses) and the tags of its posts;
  a scope's id (category or tag slug, author username) is looked up once and kept in process;
- orjson for the body; a Redis cache of the whole body's bytes per URL (GET, else compute and
  SET EX), no serialization on a hit.

The envelope is Readwire's (`data`, `meta.limit`, `meta.next_cursor`) and the items are the same
dicts, so the two can be checked against each other (tests/test_compare.py). What it leaves out,
being a benchmark peer and not the product: signed cursors (its cursor is the plain position),
`prev` walks, Link headers, validators (ETag/304), invalidation, problem+json.
"""

from __future__ import annotations

import base64
import os
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
import redis.asyncio as aioredis
from fastapi import FastAPI, Query, Request
from fastapi.responses import Response

# A post's url as Readwire spells it (app/services/items.py:post_urls): the site's page when there
# is one, else the API's own URL under the public base (the peer is told Readwire's root).
SITE_URL = os.environ.get("PUBLIC_SITE_URL", "").rstrip("/")
POSTS_URL = os.environ.get("PUBLIC_BASE_URL", "http://127.0.0.1").rstrip("/") + "/api/v1/posts/"
TTL = int(os.environ.get("PEER_CACHE_TTL", "30"))
POOL_SIZE = int(os.environ.get("PEER_POOL_SIZE", "32"))
JSON_OPTIONS = orjson.OPT_UTC_Z | orjson.OPT_OMIT_MICROSECONDS
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
TOP = (datetime(9999, 12, 31, tzinfo=UTC), 2**62)
_CURSOR = struct.Struct(">qq")

_COLUMNS = """p.id, p.slug, p.title, p.summary, p.published_at, p.updated_at, p.comment_count,
       a.id, a.username, a.display_name, a.avatar_url, c.id, c.slug, c.name"""
_JOINS = "JOIN authors a ON a.id = p.author_id JOIN categories c ON c.id = p.category_id"
_VISIBLE = "p.status = 'published' AND p.deleted_at IS NULL"
_PAGE = {
    "all": f"""SELECT {_COLUMNS} FROM posts p {_JOINS}
        WHERE {_VISIBLE} AND (p.published_at, p.id) < ($1, $2)
        ORDER BY p.published_at DESC, p.id DESC LIMIT $3""",
    "category": f"""SELECT {_COLUMNS} FROM posts p {_JOINS}
        WHERE {_VISIBLE} AND p.category_id = $4 AND (p.published_at, p.id) < ($1, $2)
        ORDER BY p.published_at DESC, p.id DESC LIMIT $3""",
    "author": f"""SELECT {_COLUMNS} FROM posts p {_JOINS}
        WHERE {_VISIBLE} AND p.author_id = $4 AND (p.published_at, p.id) < ($1, $2)
        ORDER BY p.published_at DESC, p.id DESC LIMIT $3""",
    "tag": f"""SELECT {_COLUMNS} FROM post_tags pt JOIN posts p ON p.id = pt.post_id {_JOINS}
        WHERE pt.tag_id = $4 AND pt.published_at IS NOT NULL AND {_VISIBLE}
          AND (pt.published_at, pt.post_id) < ($1, $2)
        ORDER BY pt.published_at DESC, pt.post_id DESC LIMIT $3""",
}
_TAGS = """SELECT pt.post_id, t.id, t.slug, t.name FROM post_tags pt JOIN tags t ON t.id = pt.tag_id
    WHERE pt.post_id = ANY($1::bigint[]) ORDER BY pt.post_id, t.slug"""
_SCOPE = {
    "category": "SELECT id FROM categories WHERE slug = $1",
    "tag": "SELECT id FROM tags WHERE slug = $1",
    "author": "SELECT id FROM authors WHERE username = $1",
}


class State:
    pool: asyncpg.Pool
    cache: aioredis.Redis
    scopes: dict[tuple[str, str], int]


state = State()


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    state.pool = await asyncpg.create_pool(
        os.environ["PEER_DATABASE_URL"], min_size=POOL_SIZE, max_size=POOL_SIZE, max_inactive_connection_lifetime=0
    )
    state.cache = aioredis.Redis.from_url(os.environ["PEER_REDIS_URL"], max_connections=POOL_SIZE * 2)
    state.scopes = {}
    yield
    await state.cache.aclose()
    await state.pool.close()


app = FastAPI(lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None)


def encode_cursor(position: datetime, item_id: int) -> str:
    micros = (position - EPOCH) // timedelta(microseconds=1)
    return base64.urlsafe_b64encode(_CURSOR.pack(micros, item_id)).rstrip(b"=").decode()


def decode_cursor(token: str) -> tuple[datetime, int]:
    micros, item_id = _CURSOR.unpack(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    return EPOCH + timedelta(microseconds=micros), item_id


def problem(status: int, detail: str) -> Response:
    return Response(orjson.dumps({"status": status, "detail": detail}), status, media_type="application/problem+json")


async def scope_id(kind: str, key: str) -> int | None:
    found = state.scopes.get((kind, key))
    if found is None:
        found = await state.pool.fetchval(_SCOPE[kind], key)
        if found is not None:
            state.scopes[(kind, key)] = found
    return found


def item(row: asyncpg.Record) -> dict[str, Any]:
    (pid, slug, title, summary, published_at, updated_at, comment_count,
     aid, username, display_name, avatar_url, cid, cslug, cname) = row  # fmt: skip
    return {
        "id": pid,
        "slug": slug,
        "title": title,
        "summary": summary,
        "url": f"{SITE_URL}/posts/{slug}" if SITE_URL else f"{POSTS_URL}{pid}",
        "published_at": published_at,
        "updated_at": updated_at,
        "author": {"id": aid, "username": username, "display_name": display_name, "avatar_url": avatar_url},
        "category": {"id": cid, "slug": cslug, "name": cname},
        "tags": [],
        "comment_count": comment_count,
    }


async def page_body(kind: str, scope: int, cursor: str | None, limit: int) -> bytes:
    position, after_id = decode_cursor(cursor) if cursor else TOP
    args: tuple[Any, ...] = (position, after_id, limit + 1) + ((scope,) if kind != "all" else ())
    async with state.pool.acquire() as conn:
        rows = await conn.fetch(_PAGE[kind], *args)
        more = len(rows) > limit
        items = [item(row) for row in rows[:limit]]
        by_id = {i["id"]: i for i in items}
        if by_id:
            for post_id, tag_id, slug, name in await conn.fetch(_TAGS, list(by_id)):
                by_id[post_id]["tags"].append({"id": tag_id, "slug": slug, "name": name})
    last = items[-1] if items else None
    next_cursor = encode_cursor(last["published_at"], last["id"]) if more and last else None
    meta = {"limit": limit, "next_cursor": next_cursor, "prev_cursor": None}
    return orjson.dumps({"data": items, "meta": meta}, option=JSON_OPTIONS)


async def feed(request: Request, kind: str, key: str | None, limit: int, cursor: str | None) -> Response:
    cache_key = f"peer:{request.url.path}?{request.url.query}"
    cached = await state.cache.get(cache_key)
    if cached is not None:
        return Response(cached, media_type="application/json")
    scope = 0
    if key is not None:
        found = await scope_id(kind, key)
        if found is None:
            return problem(404, f"No {kind} '{key}'.")
        scope = found
    try:
        body = await page_body(kind, scope, cursor, limit)
    except (ValueError, struct.error):
        return problem(400, "Malformed cursor.")
    await state.cache.set(cache_key, body, ex=TTL)
    return Response(body, media_type="application/json")


Limit = Query(20, ge=1, le=100)


@app.get("/api/v1/feed")
async def global_feed(request: Request, limit: int = Limit, cursor: str | None = None) -> Response:
    return await feed(request, "all", None, limit, cursor)


@app.get("/api/v1/categories/{slug}/feed")
async def category_feed(request: Request, slug: str, limit: int = Limit, cursor: str | None = None) -> Response:
    return await feed(request, "category", slug, limit, cursor)


@app.get("/api/v1/tags/{slug}/feed")
async def tag_feed(request: Request, slug: str, limit: int = Limit, cursor: str | None = None) -> Response:
    return await feed(request, "tag", slug, limit, cursor)


@app.get("/api/v1/authors/{username}/feed")
async def author_feed(request: Request, username: str, limit: int = Limit, cursor: str | None = None) -> Response:
    return await feed(request, "author", username, limit, cursor)


@app.get("/healthz")
async def healthz() -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")
