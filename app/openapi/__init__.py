"""The OpenAPI 3.1 document, built once per app from the URL map and app/openapi/operations.py.

Paths and path parameters come from the routes themselves; query parameters and request
bodies from the marshmallow schemas that validate them (apispec's MarshmallowPlugin); response
shapes from app/openapi/schemas.py.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Flask
from marshmallow import fields as ma_fields
from werkzeug.routing import Rule

from app.api import API_PREFIX, SlugConverter, UsernameConverter
from app.compat import rule_converters
from app.openapi import schemas as doc
from app.openapi.operations import HEADER_COMPONENTS, OPERATIONS, headers, problem
from app.schemas.params import FieldSet, IdList

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

**CORS.** Public reads answer `Access-Control-Allow-Origin: *` (never with credentials) and expose
ETag, Last-Modified, Link, Age, Retry-After, RateLimit, RateLimit-Policy and X-Request-ID.
Cross-origin writes are allowed only from configured origins.

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
outcome the edge cannot know is `502 outcome_unknown` (no `Retry-After`): check before repeating it.

**Request ids.** Every response carries `X-Request-ID`: yours if you sent a valid one (1-128
printable ASCII characters), else a generated one. It is in every log line of the request.

HEAD is answered wherever GET is.
"""

_PARAMETERS: dict[str, dict[str, Any]] = {
    "Origin": {"in": "header", "name": "Origin", "schema": {"type": "string"}},
    "Access-Control-Request-Method": {
        "in": "header",
        "name": "Access-Control-Request-Method",
        "schema": {"type": "string"},
    },
    "Access-Control-Request-Headers": {
        "in": "header",
        "name": "Access-Control-Request-Headers",
        "schema": {"type": "string"},
    },
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

_PREFLIGHT_HEADERS = {
    "Access-Control-Allow-Origin": "`*` for reads; the origin for writes from an allowed origin; absent otherwise.",
    "Access-Control-Allow-Methods": "Methods a cross-origin request may use.",
    "Access-Control-Allow-Headers": "Request headers a cross-origin request may send.",
    "Access-Control-Max-Age": "Seconds a browser may reuse this answer.",
    "Allow": "Methods this path answers.",
}

_CONVERTERS: dict[str, dict[str, Any]] = {
    "IntegerConverter": {"type": "integer", "minimum": 0},
    "SlugConverter": {"type": "string", "pattern": f"^{SlugConverter.regex}$", "maxLength": SlugConverter.max_length},
    "UsernameConverter": {"type": "string", "pattern": f"^{UsernameConverter.regex}$"},
}
_VARIABLE = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")


def _custom_field(self: Any, field: ma_fields.Field, **kwargs: Any) -> dict[str, Any]:
    """The query fields marshmallow-to-OpenAPI cannot know: comma-separated lists."""
    if isinstance(field, FieldSet):
        names = "|".join(field.known)
        return {"type": "string", "pattern": f"^({names})(,({names}))*$", "example": ",".join(field.known[:3])}
    if isinstance(field, IdList):
        return {"type": "string", "pattern": r"^[1-9][0-9]{0,17}(,[1-9][0-9]{0,17}){0,99}$", "example": "3,1,2"}
    return {}


def _path(rule: Rule) -> tuple[str, list[dict[str, Any]]]:
    """`/posts/<int:post_id>` -> (`/posts/{post_id}`, its path parameters)."""
    parameters = [
        {"in": "path", "name": name, "required": True, "schema": _CONVERTERS[type(converter).__name__]}
        for name, converter in rule_converters(rule).items()
    ]
    return _VARIABLE.sub(r"{\1}", rule.rule), parameters


def _preflight_response() -> dict[str, Any]:
    response_headers = headers()
    response_headers.update(
        {name: {"description": text, "schema": {"type": "string"}} for name, text in _PREFLIGHT_HEADERS.items()}
    )
    return {"description": "What a cross-origin request may do here.", "headers": response_headers}


_PREFLIGHT = {
    "summary": "CORS preflight",
    "tags": ["CORS"],
    "parameters": ["Origin", "Access-Control-Request-Method", "Access-Control-Request-Headers"],
    "responses": {"200": "Preflight", "404": "NotFound"},
}


def build_document(app: Flask) -> dict[str, Any]:
    plugin = MarshmallowPlugin()
    spec = APISpec(
        title="Readwire API",
        version="1",
        openapi_version="3.1.0",
        plugins=[plugin],
        info={"description": DESCRIPTION},
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
    spec.components.response("Preflight", _preflight_response())
    spec.components.response("NotFound", problem("`not_found`: no route matches this path."))
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: (r.rule, r.endpoint)):
        operation = OPERATIONS.get(rule.endpoint)
        if operation is None:
            continue  # undocumented: tests/api/test_openapi.py fails on it
        path, parameters = _path(rule)
        operations = {
            method.lower(): {**copy.deepcopy(operation), "operationId": rule.endpoint.replace(".", "_")}
            for method in sorted(rule.methods - {"HEAD", "OPTIONS"})  # type: ignore[operator]
        }
        if rule.rule.startswith(API_PREFIX + "/"):
            operations["options"] = {**_PREFLIGHT, "operationId": f"{rule.endpoint.replace('.', '_')}_preflight"}
        spec.path(path=path, operations=operations, parameters=parameters)
    document = spec.to_dict()
    for schema in document["components"]["schemas"].values():
        schema.setdefault("additionalProperties", False)  # every response shape is closed
    return document
