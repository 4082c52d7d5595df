"""What the OpenAPI document says about each endpoint, keyed by Flask endpoint name.

Paths and path parameters come from the URL map (app/openapi/__init__.py), so a route cannot
be documented under the wrong path; a route missing here is missing from the document, which
tests/api/test_openapi.py fails on.
"""

from __future__ import annotations

from typing import Any

from marshmallow import Schema

from app.openapi import schemas as doc
from app.schemas import params, writes

JSON = "application/json"
PROBLEM = "application/problem+json"
FEED_JSON = "application/feed+json"
ATOM = "application/atom+xml"

_HEADERS: dict[str, dict[str, Any]] = {
    "X-Request-ID": {
        "description": "This request's id: the client's X-Request-ID if valid (1-128 printable ASCII "
        "characters), else a generated one. Quote it when reporting a problem.",
        "schema": {"type": "string", "minLength": 1, "maxLength": 128},
    },
    "ETag": {"description": "Weak validator; send it back in If-None-Match.", "schema": {"type": "string"}},
    "Last-Modified": {
        "description": "When the page's content last changed (HTTP-date); kept while re-renders give the same bytes.",
        "schema": {"type": "string"},
    },
    "Cache-Control": {
        "description": "`public, max-age=1, s-maxage=1, stale-while-revalidate=1, stale-if-error=300` on reads "
        "(HTTP_CACHE_CONTROL); `no-store` on errors, writes and tokens.",
        "schema": {"type": "string"},
    },
    "Vary": {"description": "`Accept-Encoding`.", "schema": {"type": "string"}},
    "Link": {
        "description": 'RFC 8288: `rel="next"` (older items) and `rel="prev"` (newer items: poll from it), '
        "absolute URLs that keep the other query parameters.",
        "schema": {"type": "string"},
    },
    "Age": {
        "description": "Seconds since the page was computed, when it is served past its TTL (database down).",
        "schema": {"type": "integer", "minimum": 0},
    },
    "Access-Control-Allow-Origin": {
        "description": "`*` on public reads; the caller's origin on writes from an allowed origin "
        "(CORS_WRITE_ORIGINS). Never with credentials.",
        "schema": {"type": "string"},
    },
    "Access-Control-Expose-Headers": {
        "description": "Headers a browser client may read.",
        "schema": {"type": "string"},
    },
    "RateLimit-Policy": {
        "description": 'Quota (draft-ietf-httpapi-ratelimit-headers): `"write";q=60;w=60` = 60 requests per '
        '60 s window per author; `"auth";q=10;w=60` per client address.',
        "schema": {"type": "string"},
    },
    "RateLimit": {
        "description": 'What is left: `"write";r=59;t=42` = 59 requests, window resets in 42 s.',
        "schema": {"type": "string"},
    },
    "Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer", "minimum": 1}},
    "Location": {"description": "URL of the created resource.", "schema": {"type": "string"}},
    "Idempotent-Replayed": {
        "description": "`true` when this is the stored answer of an earlier request with the same Idempotency-Key.",
        "schema": {"type": "string", "enum": ["true"]},
    },
    "WWW-Authenticate": {"description": 'RFC 6750 challenge: `Bearer realm="readwire"`.', "schema": {"type": "string"}},
}
_PUBLIC = ("Access-Control-Allow-Origin", "Access-Control-Expose-Headers")
_CACHED = ("ETag", "Last-Modified", "Cache-Control", "Vary")
_RATED = ("RateLimit-Policy", "RateLimit")


# Registered under components/headers twice (app/openapi/__init__.py): `<name>` and, with
# `required: true`, `<name>.required` (a reference cannot override `required`).
HEADER_COMPONENTS = {
    **_HEADERS,
    **{f"{name}.required": {**header, "required": True} for name, header in _HEADERS.items()},
}


def headers(*names: str, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """Response headers by reference; X-Request-ID is on every response."""
    required = ("X-Request-ID", *required)
    return {
        name: {"$ref": f"#/components/headers/{name}{'.required' if name in required else ''}"}
        for name in ("X-Request-ID", *names)
    }


def problem(description: str, *names: str, required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "description": description,
        "headers": headers(*names, required=required),
        "content": {PROBLEM: {"schema": doc.Problem}},
    }


_BAD_QUERY = "`invalid_parameter` (bad value, unknown or repeated parameter, unknown `fields`) or `invalid_cursor`."
_UNAVAILABLE = "`unavailable`: the database is unreachable and nothing is cached for this page."


def query(schema: Schema) -> list[dict[str, Any]]:
    return [{"in": "query", "schema": schema}]


def cached_read(
    summary: str,
    tag: str,
    schema: Any,
    *,
    description: str = "",
    query_schema: Schema = params.no_query,
    media_type: str = JSON,
    paged: bool = False,
    missing: str | None = None,
) -> dict[str, Any]:
    """A public GET answered through the page cache: 200, 304, 400, (404), 503."""
    ok_headers = (*_CACHED, "Link", "Age", *_PUBLIC) if paged else (*_CACHED, "Age", *_PUBLIC)
    content = {"schema": schema} if media_type != ATOM else {"schema": {"type": "string"}}
    responses: dict[str, Any] = {
        "200": {
            "description": "The page.",
            "headers": headers(*ok_headers, required=(*_CACHED, *_PUBLIC)),
            "content": {media_type: content},
        },
        "304": {
            "description": "Not modified (If-None-Match or If-Modified-Since matched); no body.",
            "headers": headers("ETag", "Cache-Control", "Vary", "Last-Modified", *_PUBLIC, required=("ETag", *_PUBLIC)),
        },
        "400": problem(_BAD_QUERY, *_PUBLIC, required=_PUBLIC),
    }
    if missing:
        responses["404"] = problem(f"`not_found`: {missing} (cached for 5 s).", *_CACHED, *_PUBLIC, required=_PUBLIC)
    responses["503"] = problem(_UNAVAILABLE, "Retry-After", *_PUBLIC, required=("Retry-After", *_PUBLIC))
    return {
        "summary": summary,
        "description": description,
        "tags": [tag],
        "security": [],  # anonymous
        "parameters": [
            *query(query_schema),
            "If-None-Match",
            "If-Modified-Since",
            "X-Request-ID",
        ],
        "responses": responses,
    }


def write(
    summary: str,
    tag: str,
    *,
    description: str = "",
    body: Schema | None,
    status: int,
    schema: Any,
    missing: str | None = None,
    forbidden: str | None = None,
    security: str = "bearer",
    extra: tuple[str, ...] = (),
    keyed: bool = False,
) -> dict[str, Any]:
    """An authenticated write (rate-limited per author) or a token request (per address);
    `keyed`: it takes an Idempotency-Key."""
    replayed = ("Idempotent-Replayed",) if keyed else ()
    ok_headers = headers(*_RATED, *extra, *replayed, *_PUBLIC, required=(*_RATED, *extra))
    ok: dict[str, Any] = {"description": summary, "headers": ok_headers}
    if schema is not None:
        ok["content"] = {JSON: {"schema": schema}}
    responses: dict[str, Any] = {str(status): ok}
    if body is not None:
        responses["400"] = problem("`invalid_json`: the body is not JSON.")
    responses["401"] = problem("`unauthorized`: missing, invalid or expired token.", "WWW-Authenticate", *_RATED)
    if forbidden:
        responses["403"] = problem(f"`forbidden`: {forbidden}")
    if missing:
        responses["404"] = problem(f"`not_found`: {missing}", *_RATED)
    if keyed:
        responses["400"] = problem("`invalid_json`: the body is not JSON; `invalid_idempotency_key`.")
        responses["409"] = problem(
            "`idempotency_key_in_use`: a request with this key is still in progress.",
            "Retry-After",
            required=("Retry-After",),
        )
    if body is not None:  # the body checks (a DELETE or a refresh sends none, and none is read)
        responses.update(
            {
                "413": problem("`payload_too_large`: the body is over 1 MiB.", *_RATED),
                "415": problem("`unsupported_media_type`: send application/json.", *_RATED),
                "422": problem(
                    "`validation_failed`: the body breaks the schema (`errors` per field)"
                    + ("; `idempotency_key_reused`: the key was used for another request." if keyed else "."),
                    *_RATED,
                ),
            }
        )
    responses.update(
        {
            "429": problem(
                "`rate_limited`: over the quota.", *_RATED, "Retry-After", required=(*_RATED, "Retry-After")
            ),
            "503": problem(
                "`unavailable` (with `Retry-After`): the database is unreachable or did not answer within "
                "its deadline; nothing changed. `outcome_unknown` (no `Retry-After`): the database did not "
                "confirm the write in time, so it may or may not have been applied: check before repeating "
                "it" + (" (with an `Idempotency-Key`: `unavailable`, repeat it with the same key)." if keyed else "."),
                "Retry-After",
            ),
        }
    )
    operation: dict[str, Any] = {
        "summary": summary,
        "description": description,
        "tags": [tag],
        "parameters": ["X-Request-ID", *(["Idempotency-Key"] if keyed else [])],
        "responses": responses,
    }
    operation["security"] = [{security: []}] if security else []
    if body is not None:
        operation["requestBody"] = {"required": True, "content": {JSON: {"schema": body}}}
    return operation


def plain(
    summary: str, tag: str, media_type: str, schema: Any, *, description: str = "", **extra: Any
) -> dict[str, Any]:
    """An uncached GET outside the page cache (probes, metrics, the document itself)."""
    responses: dict[str, Any] = {
        "200": {
            "description": summary,
            "headers": headers("Cache-Control", "ETag", *extra.get("ok_headers", ())),
            "content": {media_type: {"schema": schema}},
        },
        **extra.get("responses", {}),
    }
    return {
        "summary": summary,
        "description": description,
        "tags": [tag],
        "security": [],  # anonymous
        "parameters": [*query(extra.get("query_schema", params.no_query)), "X-Request-ID"],
        "responses": responses,
    }


def _feed(scope: str, missing: str | None = None) -> dict[str, Any]:
    return cached_read(
        f"Newest posts{scope}",
        "Feeds",
        doc.PostPage,
        description="Published posts, newest first (`published_at` DESC, `id` DESC), keyset-paginated: "
        "follow Link `next` for older posts, `prev` for newer ones (always present, even on an empty page).",
        query_schema=params.feed_query,
        paged=True,
        missing=missing,
    )


def _syndication(media_type: str, scope: str, missing: str | None = None) -> dict[str, Any]:
    name = "JSON Feed 1.1" if media_type == FEED_JSON else "Atom 1.0 (RFC 4287)"
    return cached_read(
        f"{name}: newest posts{scope}",
        "Syndication",
        doc.JsonFeed if media_type == FEED_JSON else None,
        description="The same pages as the JSON feed, for feed readers; paged per RFC 5005 (Atom `next`/"
        "`previous` links, JSON Feed `next_url`). Same cache namespaces, so a write shows at once.",
        query_schema=params.page_query,
        media_type=media_type,
        paged=True,
        missing=missing,
    )


_STREAM_DESCRIPTION = (
    "Server-Sent Events (text/event-stream): `post.created` (a post became visible), `post.updated` (a "
    "visible post changed), `post.deleted` (deleted or unpublished), each sent after its write committed, "
    "with `data` = `{type, post: {id, slug, title, url, published_at, updated_at, category, tags, author}, "
    "written_at}` (`post: {id}` for deletions) and an `id` that is a signed position. Reconnect with "
    "`Last-Event-ID` (EventSource does) to get what was missed, replayed in order, then live: nothing lost, "
    "nothing twice. Past 1,000 missed events (SSE_REPLAY_MAX) the stream sends `reset` (its `id` is the "
    "current position): refetch the feed, then carry on. A `: heartbeat` comment at least every 15 s "
    "(with an `id` when events of other scopes moved the position). At most 8 open streams per client "
    "address (SSE_MAX_PER_CLIENT).\n\n"
    "    curl -N -H 'Accept: text/event-stream' https://readwire.example/api/v1/stream"
)


def _stream(scope: str, missing: str | None = None) -> dict[str, Any]:
    responses: dict[str, Any] = {
        "200": {
            "description": "The stream (never ends by itself).",
            "headers": headers("Cache-Control", *_PUBLIC, required=("Cache-Control", *_PUBLIC)),
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        "400": problem(
            "`invalid_parameter` (any query parameter) or `invalid_cursor` (a Last-Event-ID this server did not "
            "issue: reconnect without it).",
            *_PUBLIC,
            required=_PUBLIC,
        ),
    }
    if missing:
        responses["404"] = problem(f"`not_found`: {missing}.", *_PUBLIC, required=_PUBLIC)
    responses["429"] = problem(
        "`rate_limited`: this address holds its quota of open streams.",
        "Retry-After",
        *_PUBLIC,
        required=("Retry-After",),
    )
    responses["503"] = problem(
        "`unavailable`: this server holds as many streams as it can, or the database is unreachable.",
        "Retry-After",
        *_PUBLIC,
        required=("Retry-After",),
    )
    return {
        "summary": f"Live post changes{scope}",
        "description": _STREAM_DESCRIPTION,
        "tags": ["Streams"],
        "security": [],  # anonymous
        "parameters": [
            {
                "in": "header",
                "name": "Last-Event-ID",
                "required": False,
                "description": "The `id` of the last event received: resume after it.",
                "schema": {"type": "string", "maxLength": 64},
            },
            "X-Request-ID",
        ],
        "responses": responses,
    }


_READY_DOWN = {"description": "The database is unreachable.", "content": {JSON: {"schema": doc.Ready}}}
# Probes answer 200 or 503 whatever the request (a monitor's cache-buster included); what a
# client can still get is the HTTP servers' own answer to a malformed or oversized request.
_PROBE_4XX = {
    "description": "Not from the probe: the HTTP server in front of it (Nginx, gunicorn) refusing a malformed "
    "or oversized request (e.g. 400, 414 URI Too Long, 431 Request Header Fields Too Large), as plain text."
}
_EDGE_429 = problem(
    "`rate_limited` at the edge (Nginx, per client address; the app does not limit reads).", "Retry-After"
)

OPERATIONS: dict[str, dict[str, Any]] = {
    "feeds.global_feed": _feed(""),
    "feeds.category_feed": _feed(" in one category", "no such category"),
    "feeds.tag_feed": _feed(" with one tag", "no such tag"),
    "feeds.author_feed": _feed(" by one author", "no such author"),
    "feeds.popular": cached_read(
        "Hottest posts",
        "Feeds",
        doc.PostPage,
        description="Ranked by `(comment_count + 1) / (age_hours + 2)^1.8` from a snapshot computed at most "
        "once a minute; a cursor keeps walking the snapshot it came from (for an hour).",
        query_schema=params.feed_query,
        paged=True,
    ),
    "syndication.global_json": _syndication(FEED_JSON, ""),
    "syndication.global_atom": _syndication(ATOM, ""),
    "syndication.category_json": _syndication(FEED_JSON, " in one category", "no such category"),
    "syndication.category_atom": _syndication(ATOM, " in one category", "no such category"),
    "syndication.tag_json": _syndication(FEED_JSON, " with one tag", "no such tag"),
    "syndication.tag_atom": _syndication(ATOM, " with one tag", "no such tag"),
    "syndication.author_json": _syndication(FEED_JSON, " by one author", "no such author"),
    "syndication.author_atom": _syndication(ATOM, " by one author", "no such author"),
    "streams.global_stream": _stream(""),
    "streams.category_stream": _stream(" in one category", "no such category"),
    "streams.tag_stream": _stream(" with one tag", "no such tag"),
    "streams.author_stream": _stream(" by one author", "no such author"),
    "posts.post_detail": cached_read(
        "One post with its body",
        "Posts",
        doc.PostDetail,
        query_schema=params.post_query,
        missing="no published post with this id",
    ),
    "posts.posts_by_ids": cached_read(
        "Posts by id",
        "Posts",
        doc.PostList,
        description="Up to 100 posts in the order asked; missing or hidden ids are left out.",
        query_schema=params.bulk_posts_query,
    ),
    "posts.post_comments": cached_read(
        "Comments on a post",
        "Posts",
        doc.CommentPage,
        description="Oldest first (`created_at`, `id`): `next` walks to newer comments, `prev` to older ones.",
        query_schema=params.comments_query,
        paged=True,
        missing="no published post with this id",
    ),
    "directory.categories": cached_read("Categories with post counts", "Directory", doc.CategoryList),
    "directory.tags": cached_read("Top tags by post count", "Directory", doc.TagList, query_schema=params.tags_query),
    "directory.authors": cached_read(
        "Authors",
        "Directory",
        doc.AuthorPage,
        description="Every author (the list view: no counters), in `id` order, keyset-paginated: follow Link "
        "`next` (or `meta.next_cursor`) until it is null. By id because ids never change and new accounts join at "
        "the end, so a walk neither repeats nor skips anyone.",
        query_schema=params.page_query,
        paged=True,
    ),
    "directory.author": cached_read("One author", "Directory", doc.AuthorDetail, missing="no such author"),
    "auth.issue_token": write(
        "Access and refresh tokens",
        "Auth",
        description="Sign in with username and password. Rate-limited per client address.",
        body=writes.token_request,
        status=200,
        schema=doc.Tokens,
        security="",
    ),
    "auth.refresh_token": write(
        "A new access token",
        "Auth",
        description="Send the refresh token as the bearer token; the role is read again.",
        body=None,
        status=200,
        schema=doc.AccessToken,
        security="bearer",
    ),
    "writes.create_post": write(
        "Create a post",
        "Writes",
        description="Editors only; published unless `status` is `draft`.",
        body=writes.post_create,
        status=201,
        schema=doc.WrittenPost,
        forbidden="only editors may write posts.",
        extra=("Location",),
        keyed=True,
    ),
    "writes.update_post": write(
        "Edit, publish or unpublish a post",
        "Writes",
        description="Any non-empty subset of the fields; editors, own posts only.",
        body=writes.post_update,
        status=200,
        schema=doc.WrittenPost,
        missing="no such post",
        forbidden="not an editor, or not the author of this post.",
    ),
    "writes.delete_post": write(
        "Delete a post",
        "Writes",
        description="Soft delete: the post leaves every feed and count at once.",
        body=None,
        status=204,
        schema=None,
        missing="no such post",
        forbidden="not an editor, or not the author of this post.",
    ),
    "writes.create_comment": write(
        "Comment on a post",
        "Writes",
        description="Any signed-in author.",
        body=writes.comment_create,
        status=201,
        schema=doc.WrittenComment,
        missing="no published post with this id",
        keyed=True,
    ),
    "health.healthz": plain(
        "Liveness: the process is up", "Operations", JSON, doc.Health, responses={"4XX": _PROBE_4XX}
    ),
    "health.readyz": plain(
        "Readiness: database and cache reachable",
        "Operations",
        JSON,
        doc.Ready,
        description="`degraded` (200) when only the cache is down: reads then come from the database.",
        responses={"4XX": _PROBE_4XX, "503": {**_READY_DOWN, "headers": headers("Retry-After", "Cache-Control")}},
    ),
    "metrics": plain(
        "Prometheus metrics",
        "Operations",
        "text/plain",
        {"type": "string"},
        description="Prometheus text format; not cached, no CORS. Keep it off the public edge.",
        responses={"404": problem("`not_found` at the edge (Nginx) for any client but this host.")},
    ),
    "docs.openapi": plain(
        "This document",
        "Documentation",
        JSON,
        {"type": "object"},
        ok_headers=_PUBLIC,
        responses={"304": {"description": "Not modified.", "headers": headers("ETag")}, "429": _EDGE_429},
    ),
    "docs.reference": plain(
        "Reference page",
        "Documentation",
        "text/html",
        {"type": "string"},
        description="This page: Swagger UI (shipped by the pinned swagger-ui-py package, served from this "
        "process; no CDN, works offline) rendering this document, with try-it against this host.",
        ok_headers=_PUBLIC,
        responses={"304": {"description": "Not modified.", "headers": headers("ETag")}, "429": _EDGE_429},
    ),
}
