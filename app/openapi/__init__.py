"""The OpenAPI 3.1 document, built once per app from the URL map and app/openapi/operations.py.

Paths and path parameters come from the routes themselves; query parameters and request
bodies from the marshmallow schemas that validate them (apispec's MarshmallowPlugin); response
shapes from app/openapi/schemas.py.
"""

from __future__ import annotations

import copy
import re
from importlib.resources import files
from typing import Any

import orjson
from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Flask
from marshmallow import fields as ma_fields
from werkzeug.routing import Rule

from app.api import SlugConverter, UsernameConverter
from app.compat import rule_converters
from app.openapi import schemas as doc
from app.openapi.operations import HEADER_COMPONENTS, OPERATIONS
from app.schemas.params import MAX_ID, FieldSet, IdList

DESCRIPTION = """\
Public, anonymous, read-mostly feeds of posts; authenticated writes.

**Caching.** Every public GET carries a weak `ETag`, `Last-Modified` and `Cache-Control`; send
`If-None-Match` (or `If-Modified-Since`) to get `304 Not Modified` cheaply. Unknown or repeated
query parameters are `400 invalid_parameter`, so they cannot be used to bypass caches.

**Pagination.** Lists are `{"data": [...], "meta": {"limit", "next_cursor", "prev_cursor"}}` with
an RFC 8288 `Link` header (`next`: older items, `prev`: newer items; feeds always carry `prev`, so
a poller resumes from it). Cursors are opaque and signed; `limit` is 1..100 (default 20).

**Sparse fields.** Lists of posts and comments, and post detail, take `fields=id,title,...`: exactly
those fields are returned (nested `author`, `category`, `tags` are selectable as wholes); an
unknown name is `400 invalid_parameter` listing it.

**Syndication.** Every feed is also served as JSON Feed 1.1 (`.json`, `application/feed+json`)
and Atom (`.atom`, `application/atom+xml`), paged like the JSON feeds.

**Errors** are `application/problem+json` (RFC 9457) with a stable `code`.

**CORS** (described once here; preflights are not listed per path). Public reads (GET/HEAD, errors
and 304s included) answer `Access-Control-Allow-Origin: *`, never with credentials, and expose ETag,
Last-Modified, Link, Age, Retry-After, RateLimit, RateLimit-Policy, X-Request-ID and Location. An
`OPTIONS` preflight on any `/api/v1` path answers `200` with `Allow`; for a read
(`Access-Control-Request-Method: GET` or `HEAD`) also `Access-Control-Allow-Origin: *`,
`Access-Control-Allow-Methods: GET, HEAD, OPTIONS`, `Access-Control-Allow-Headers: Accept,
If-None-Match, If-Modified-Since, X-Request-ID` and `Access-Control-Max-Age: 7200`
(`CORS_MAX_AGE`). Cross-origin writes and sign-in are allowed only from the origins in
`CORS_WRITE_ORIGINS`: their preflight echoes the origin (with `Vary: Origin`) and adds POST, PATCH,
DELETE, Authorization and Content-Type; any other origin gets no CORS headers. An unknown path is
`404 not_found`.

**Rate limits.** Sign-in and refresh: 10 requests per minute per client address; writes: 60 per
minute per author. Limited endpoints carry `RateLimit-Policy` and `RateLimit`
(draft-ietf-httpapi-ratelimit-headers); past the quota, `429 rate_limited` with `Retry-After`.
Public reads are limited at the edge.

**Idempotency keys.** `POST /posts` and `POST /posts/{post_id}/comments` take an `Idempotency-Key`
header (IETF httpapi draft, as Stripe does it): a quoted string of 1-255 printable ASCII characters,
unique per write, e.g. `Idempotency-Key: "8e03978e-40d5-43e8-bc93-6894a57f9324"`. Repeat the
request with the same key and body as often as needed (a timeout, a reset, a 502/503): the first
request that commits is the only write, and every repetition gets its answer again (status, body,
`Location`) with `Idempotent-Replayed: true`, without counting against the rate limit. The same key
with another body or path is `422 idempotency_key_reused`; while the first request is still in
progress, `409 idempotency_key_in_use` (with `Retry-After`). A request that failed wrote nothing
and can be retried with its key. Keys are kept 24 hours per author. Without a key, a write whose
outcome the edge cannot know is `502 outcome_unknown` (no `Retry-After`), and one whose COMMIT the
database did not confirm within its deadline `503 outcome_unknown` (no `Retry-After`): check before
repeating it.

**Request ids.** Every response carries `X-Request-ID`: yours if you sent a valid one (1-128
printable ASCII characters), else a generated one. It is in every log line of the request.

HEAD is answered wherever GET is.

**Try it.** This page sends requests to the host that served it. The examples are real answers of
the demo data (`make run`); sign in as the demo editor there (`demo_editor`,
`demo-password-local-only`, local demo only) with `POST /api/v1/auth/token`, then **Authorize**
with the access token to try the writes.
"""

# Sidebar and section order: what a reader wants first, the operational endpoints last.
TAGS = [
    {"name": "Feeds", "description": "Newest posts (global, per category, tag or author) and the hottest ones."},
    {"name": "Posts", "description": "One post with its body, posts by id, and a post's comments."},
    {"name": "Directory", "description": "Categories, tags and authors: the names the feeds are scoped by."},
    {"name": "Syndication", "description": "The feeds as JSON Feed 1.1 and Atom 1.0, for feed readers."},
    {"name": "Streams", "description": "Server-Sent Events: post changes pushed as they commit, resumable."},
    {"name": "Writes", "description": "Create, edit, publish, unpublish and delete posts; comment (signed in)."},
    {"name": "Auth", "description": "Sign in for a bearer token (editors and authors with a password)."},
    {"name": "Documentation", "description": "This document and the page rendering it."},
    {"name": "Operations", "description": "Liveness, readiness and metrics, for the platform rather than clients."},
]
# Relative: try-it calls (and any client reading the document) go to the host that served it.
SERVERS = [{"url": "/", "description": "The host serving this document"}]
# The truth: the repository has no LICENSE file, so none is granted. Redocly's recommended rules
# ask for `info.license` with an SPDX identifier or URL; a LicenseRef- is SPDX's spelling of
# "a license not on the list", and its name says which: none.
LICENSE = {"name": "None set: the repository has no LICENSE file", "identifier": "LicenseRef-None"}
EXAMPLES = "examples.json"

_PARAMETERS: dict[str, dict[str, Any]] = {
    "If-None-Match": {
        "in": "header",
        "name": "If-None-Match",
        "description": "An ETag from an earlier answer: 304 if the page has not changed.",
        "schema": {"type": "string"},
    },
    "If-Modified-Since": {
        "in": "header",
        "name": "If-Modified-Since",
        "description": "An HTTP-date (ignored when If-None-Match is sent).",
        "schema": {"type": "string"},
    },
    "Idempotency-Key": {
        "in": "header",
        "name": "Idempotency-Key",
        "description": 'Makes this write safe to repeat: a Structured Field String (`"..."`, 1-255 printable ASCII '
        "characters; a bare token is accepted too), unique per write. A repetition with the same key and body "
        "gets the first answer again and writes nothing; kept 24 h per author.",
        "schema": {"type": "string", "minLength": 1, "maxLength": 257},
    },
    "X-Request-ID": {
        "in": "header",
        "name": "X-Request-ID",
        "description": "Your id for this request (1-128 printable ASCII characters), echoed back and logged; "
        "anything else is replaced by a generated id.",
        "schema": {"type": "string"},
    },
}

_CONVERTERS: dict[str, dict[str, Any]] = {
    "IntegerConverter": {"type": "integer", "minimum": 0},
    "SlugConverter": {"type": "string", "pattern": f"^{SlugConverter.regex}$", "maxLength": SlugConverter.max_length},
    "UsernameConverter": {"type": "string", "pattern": f"^{UsernameConverter.regex}$"},
}
_VARIABLE = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")


def _custom_field(self: Any, field: ma_fields.Field, **kwargs: Any) -> dict[str, Any]:
    """The query fields marshmallow-to-OpenAPI cannot know: comma-separated lists, described as
    arrays sent `style: form, explode: false` (`fields=id,title`; see _comma_separated)."""
    if isinstance(field, FieldSet):
        return {
            "type": "array",
            "items": {"type": "string", "enum": list(field.known)},
            "minItems": 1,
        }  # repeats: dropped
    if isinstance(field, IdList):
        return {
            "type": "array",
            "items": {"type": "integer", "minimum": 1, "maximum": MAX_ID},
            "minItems": 1,
            "maxItems": field.max_items,
        }
    return {}


_COMMA_SEPARATED = {"fields", "ids"}


def _comma_separated(operation: dict[str, Any]) -> None:
    """OpenAPI's spelling of `a,b,c` in one query parameter: style form, explode false."""
    for parameter in operation.get("parameters", []):
        if isinstance(parameter, dict) and parameter.get("in") == "query" and parameter["name"] in _COMMA_SEPARATED:
            parameter.update(style="form", explode=False)


def _examples(document: dict[str, Any]) -> None:
    """Attach the committed real answers (app/openapi/examples.json, made by `python
    scripts/openapi.py examples` from the seeded app) to each operation: parameter values,
    request bodies and one response body per status and media type."""
    path = files("app.openapi").joinpath(EXAMPLES)
    if not path.is_file():
        return
    recorded = orjson.loads(path.read_bytes())["operations"]
    for path_item in document["paths"].values():
        for operation in path_item.values():
            if not isinstance(operation, dict) or "operationId" not in operation:
                continue
            example = recorded.get(operation["operationId"])
            if example is None:
                continue
            values = example.get("parameters", {})
            for parameter in [*path_item.get("parameters", []), *operation.get("parameters", [])]:
                if isinstance(parameter, dict) and parameter.get("name") in values:
                    parameter["example"] = values[parameter["name"]]
            body = example.get("request_body")
            if body is not None and "requestBody" in operation:
                operation["requestBody"]["content"]["application/json"]["example"] = body
            for status, by_media in example.get("responses", {}).items():
                content = operation["responses"].get(status, {}).get("content", {})
                for media_type, value in by_media.items():
                    if media_type in content:
                        content[media_type]["example"] = value


def _path(rule: Rule) -> tuple[str, list[dict[str, Any]]]:
    """`/posts/<int:post_id>` -> (`/posts/{post_id}`, its path parameters)."""
    parameters = [
        {"in": "path", "name": name, "required": True, "schema": _CONVERTERS[type(converter).__name__]}
        for name, converter in rule_converters(rule).items()
    ]
    return _VARIABLE.sub(r"{\1}", rule.rule), parameters


def build_document(app: Flask) -> dict[str, Any]:
    plugin = MarshmallowPlugin()
    spec = APISpec(
        title="Readwire API",
        version="1",
        openapi_version="3.1.0",
        plugins=[plugin],
        info={"description": DESCRIPTION, "license": LICENSE},
        servers=SERVERS,
        tags=TAGS,
    )
    plugin.converter.add_attribute_function(_custom_field)  # type: ignore[union-attr]
    plugin.map_to_openapi_type(ma_fields.Url, "string", "uri")
    spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"})
    for name, header in HEADER_COMPONENTS.items():
        spec.components.header(name, header)
    for name, parameter in _PARAMETERS.items():
        spec.components.parameter(name, parameter["in"], parameter)
    for name in ("Problem", "Post", "PostDetail", "Comment", "PostPage", "CommentPage", "JsonFeed"):
        spec.components.schema(name, schema=getattr(doc, name))
    # Paths in OPERATIONS' order (the global feed before the scoped ones): the page lists them so.
    order = {endpoint: index for index, endpoint in enumerate(OPERATIONS)}
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: (order.get(r.endpoint, len(order)), r.rule)):
        operation = OPERATIONS.get(rule.endpoint)
        if operation is None:
            continue  # undocumented: tests/api/test_openapi.py fails on it
        path, parameters = _path(rule)
        # HEAD is GET's (said once in the description), and so are the CORS preflights (OPTIONS).
        operations = {
            method.lower(): {**copy.deepcopy(operation), "operationId": rule.endpoint.replace(".", "_")}
            for method in sorted(rule.methods - {"HEAD", "OPTIONS"})  # type: ignore[operator]
        }
        spec.path(path=path, operations=operations, parameters=parameters)
    document = spec.to_dict()
    for path_item in document["paths"].values():
        for operation in path_item.values():
            if isinstance(operation, dict):
                _comma_separated(operation)
    _examples(document)
    # Each header is registered plain and `.required` (a $ref cannot override `required`): keep the used ones.
    used = set(re.findall(r'"#/components/headers/([^"]+)"', orjson.dumps(document["paths"]).decode()))
    document["components"]["headers"] = {k: v for k, v in document["components"]["headers"].items() if k in used}
    for schema in document["components"]["schemas"].values():
        schema.setdefault("additionalProperties", False)  # every response shape is closed
    return document
