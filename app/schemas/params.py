"""Query-parameter schemas. Unknown parameters are rejected so they cannot bust the cache."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import request
from marshmallow import RAISE, Schema, ValidationError, fields, validate
from werkzeug.datastructures import MultiDict

from app.errors import invalid_parameter

MAX_ID = 2**63 - 1  # PostgreSQL BIGINT; larger ids cannot exist and must not reach the driver


class IdList(fields.Field):
    """`3,1,2` -> [3, 1, 2]: positive integer ids, duplicates dropped, order kept."""

    default_error_messages = {
        "invalid": "Must be a comma-separated list of positive integer ids.",
        "too_many": "At most {max} ids per request.",
        "empty": "At least one id is required.",
    }

    def __init__(self, max_items: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_items = max_items

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any) -> list[int]:
        parts = str(value).split(",")
        if parts == [""]:
            raise self.make_error("empty")
        if len(parts) > self.max_items:
            raise self.make_error("too_many", max=self.max_items)
        if not all(p.isascii() and p.isdigit() and len(p) <= 19 for p in parts):
            raise self.make_error("invalid")
        ids = [int(p) for p in parts]
        if not all(0 < i <= MAX_ID for i in ids):
            raise self.make_error("invalid")
        return list(dict.fromkeys(ids))


class StrictQuery(Schema):
    error_messages = {"unknown": "Unknown query parameter."}

    class Meta:
        unknown = RAISE


class PageQuery(StrictQuery):
    limit = fields.Integer(load_default=20, validate=validate.Range(1, 100))
    cursor = fields.String()  # checked (length, signature, scope) by the cursor codec


class BulkPostsQuery(StrictQuery):
    ids = IdList(max_items=100, required=True)


class TagsQuery(StrictQuery):
    limit = fields.Integer(load_default=100, validate=validate.Range(1, 500))


class NoQuery(StrictQuery):
    """For endpoints that take no query parameters at all."""


page_query = PageQuery()
bulk_posts_query = BulkPostsQuery()
tags_query = TagsQuery()
no_query = NoQuery()


def parse_query(schema: Schema, args: MultiDict[str, str]) -> dict[str, Any]:
    """Validate request.args against a schema; any problem is a 400 invalid_parameter."""
    repeated = [key for key, values in args.lists() if len(values) > 1]
    if repeated:
        raise invalid_parameter(
            "A query parameter was given more than once.",
            {key: ["Give this parameter once."] for key in repeated},
        )
    try:
        return schema.load(args.to_dict())
    except ValidationError as exc:
        messages = exc.normalized_messages()
        errors = {str(k): list(v) if isinstance(v, list) else [str(v)] for k, v in messages.items()}
        raise invalid_parameter("One or more query parameters are invalid.", errors) from None


_PARSED: dict[tuple[int, bytes], dict[str, Any]] = {}
_PARSED_MAX = 4096  # distinct query strings remembered; past this the memo starts over


def query_params(schema: Schema) -> dict[str, Any]:
    """parse_query for the current request, memoized by the raw query string.

    Validation is a pure function of (schema, query string), and a hot feed is asked the same
    few query strings over and over: marshmallow runs once per distinct string, not per request.
    Only successful parses are kept; a bad query string raises every time.
    """
    key = (id(schema), request.query_string)
    params = _PARSED.get(key)
    if params is None:
        params = parse_query(schema, request.args)
        if len(_PARSED) >= _PARSED_MAX:
            _PARSED.clear()
        _PARSED[key] = params
    return dict(params)
