"""Write-body schemas (auth, posts, comments), built once at import.

Unknown fields are rejected and every string is bounded by its column, so a body that
passes here cannot fail in the database. Any problem is a 422 `validation_failed` with
`errors: {field: [messages]}` (nested positions as `tags.1`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from flask import Request
from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema
from werkzeug.exceptions import HTTPException

from app.errors import ApiError, validation_failed
from app.models.post import STATUSES

SLUG_PATTERN = r"^[a-z0-9]+(?:-[a-z0-9]+)*$"
MAX_TAGS = 10
# Largest accepted body: a 100,000-character post escaped as \uXXXX is ~600 kB of JSON.
MAX_BODY_BYTES = 1024 * 1024


class Text(fields.String):
    """A string PostgreSQL can store (no NUL); `strip=True` trims surrounding whitespace first."""

    default_error_messages = {"nul": "Must not contain NUL characters."}

    def __init__(self, *, strip: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.strip = strip

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        if "\x00" in text:
            raise self.make_error("nul")
        return text.strip() if self.strip else text


def _not_blank(value: str) -> None:
    if not value.strip():
        raise ValidationError("Must not be blank.")


def _unique(values: list[str]) -> None:
    if len(set(values)) != len(values):
        raise ValidationError("Tags must be unique.")


def slug_field(max_length: int, **kwargs: Any) -> Text:
    return Text(
        validate=[
            validate.Length(1, max_length),
            validate.Regexp(SLUG_PATTERN, error="Must be lowercase letters and digits separated by single hyphens."),
        ],
        **kwargs,
    )


class StrictBody(Schema):
    class Meta:
        unknown = RAISE


class TokenRequest(StrictBody):
    username = Text(required=True, validate=validate.Length(1, 40))
    # Bounded so a huge password cannot make the (deliberately slow) hash check slower.
    password = Text(required=True, validate=validate.Length(1, 1024))


def _tags(**kwargs: Any) -> fields.List:
    return fields.List(slug_field(80), validate=[validate.Length(max=MAX_TAGS), _unique], **kwargs)


class PostCreate(StrictBody):
    title = Text(strip=True, required=True, validate=validate.Length(1, 300))
    summary = Text(strip=True, load_default="", validate=validate.Length(max=1000))
    body = Text(required=True, validate=[validate.Length(1, 100_000), _not_blank])
    category = slug_field(80, required=True)
    tags = _tags(load_default=list)
    status = Text(load_default="published", validate=validate.OneOf(STATUSES))
    slug = slug_field(200)  # generated from the title when absent


class PostUpdate(StrictBody):
    """PATCH: any subset of the fields (slug excluded: permalinks are stable), at least one."""

    title = Text(strip=True, validate=validate.Length(1, 300))
    summary = Text(strip=True, validate=validate.Length(max=1000))
    body = Text(validate=[validate.Length(1, 100_000), _not_blank])
    category = slug_field(80)
    tags = _tags()
    status = Text(validate=validate.OneOf(STATUSES))

    @validates_schema
    def _not_empty(self, data: dict[str, Any], **kwargs: Any) -> None:
        if not data:
            raise ValidationError("Give at least one field to change.")


class CommentCreate(StrictBody):
    body = Text(required=True, validate=[validate.Length(1, 10_000), _not_blank])


token_request = TokenRequest()
post_create = PostCreate()
post_update = PostUpdate()
comment_create = CommentCreate()


def _flatten(messages: Any, prefix: str = "") -> dict[str, list[str]]:
    """marshmallow's nested messages ({"tags": {1: [...]}}) as {"tags.1": [...]}."""
    if isinstance(messages, Mapping):
        flat: dict[str, list[str]] = {}
        for key, value in messages.items():
            flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    items = messages if isinstance(messages, list) else [messages]
    return {prefix or "_schema": [str(item) for item in items]}


def read_body(request: Request) -> bytes:
    """The request body (kept on the request, so it can be read again): 413 past MAX_BODY_BYTES,
    400 when the server could not de-chunk it."""
    # A Content-Length past the limit is refused before reading. A chunked body has none, and
    # the stream then stops quietly at the limit: read one byte more, so a body cut short there
    # is told from one that ended there (413, not the 400 a truncated document would get).
    request.max_content_length = MAX_BODY_BYTES + 1
    try:
        body = request.get_data(cache=True)
    except HTTPException:  # 413 (Content-Length past the limit), client gone
        raise
    except Exception:  # the server could not de-chunk it (gunicorn raises its own ParseException types)
        raise ApiError(400, "bad_request", "The request body is not validly framed.", title="Bad request") from None
    if len(body) > MAX_BODY_BYTES:
        raise ApiError(413, "payload_too_large", "The request body is larger than 1 MiB.", title="Payload too large")
    return body


def load_json(schema: Schema, request: Request) -> dict[str, Any]:
    """The request's JSON object validated by `schema`: 415 for another media type, 413 when
    too large, 400 for malformed JSON, 422 for a body that breaks the schema."""
    if not request.is_json:
        raise ApiError(415, "unsupported_media_type", "Send the body as application/json.")
    body = read_body(request)
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ApiError(400, "invalid_json", "The body is not valid JSON.", title="Invalid JSON") from None
    try:
        loaded: dict[str, Any] = schema.load(payload)
    except ValidationError as exc:
        raise validation_failed(_flatten(exc.normalized_messages())) from None
    return loaded
