"""Query-parameter schemas. Unknown parameters are rejected so they cannot bust the cache."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from flask import request
from marshmallow import RAISE, Schema, ValidationError, fields, post_load, validate
from werkzeug.datastructures import MultiDict

from app.errors import invalid_parameter
from app.models.types import MAX_ID
from app.pagination import LIMIT_DEFAULT, LIMIT_MAX
from app.schemas.resources import COMMENT_FIELDS, POST_DETAIL_FIELDS, POST_FIELDS

IDS_MAX = 100  # posts per bulk get (the contract)
TAGS_LIMIT_DEFAULT, TAGS_LIMIT_MAX = 100, 500  # GET /tags: the top N by post_count (the contract)


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


class FieldSet(fields.Field):
    """`fields=title,id,title` -> "id,title": known field names only, deduplicated and sorted, so
    one set of fields is one cache key and one Link URL whatever order the client wrote."""

    default_error_messages = {
        "empty": "Give one or more field names, separated by commas (no empty names).",
        "unknown": "Unknown fields: {unknown}. Known fields: {known}.",
    }

    def __init__(self, known: Sequence[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.known = tuple(known)
        self.everything = ",".join(sorted(known))

    def _deserialize(self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any) -> str:
        names = set(str(value).split(","))
        if "" in names:
            raise self.make_error("empty")
        unknown = sorted(names.difference(self.known))
        if unknown:
            raise self.make_error("unknown", unknown=", ".join(unknown), known=", ".join(self.known))
        return ",".join(sorted(names))


def sparse(known: Sequence[str]) -> dict[str, fields.Field]:
    """The `fields` parameter, for Meta.include (a field named `fields` cannot be a class attribute)."""
    description = (
        "Return only these fields, comma-separated (`fields=id,title`), in response order; `author`, "
        "`category` and `tags` are whole fields. Unknown names are a 400 naming them."
    )
    return {"fields": FieldSet(known, metadata={"description": description})}


class StrictQuery(Schema):
    error_messages = {"unknown": "Unknown query parameter."}

    class Meta:
        unknown = RAISE


class PageQuery(StrictQuery):
    limit = fields.Integer(
        load_default=LIMIT_DEFAULT, validate=validate.Range(1, LIMIT_MAX), metadata={"description": "Items per page."}
    )
    # Checked (length, signature, scope) by the cursor codec.
    cursor = fields.String(
        metadata={"description": "Opaque, signed position from `meta.next_cursor`/`prev_cursor` or a Link URL."}
    )


class SparseQuery(StrictQuery):
    """A query that may narrow the fields of the resources it returns."""

    @post_load
    def _every_field_is_no_field(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        """Asking for every field is the default representation: one cache key, not two."""
        selected = data.get("fields")
        if selected is not None and selected == self.fields["fields"].everything:  # type: ignore[attr-defined]
            del data["fields"]
        return data


class FeedQuery(PageQuery, SparseQuery):
    class Meta(StrictQuery.Meta):
        include = sparse(POST_FIELDS)


class CommentsQuery(PageQuery, SparseQuery):
    class Meta(StrictQuery.Meta):
        include = sparse(COMMENT_FIELDS)


class PostQuery(SparseQuery):
    class Meta(StrictQuery.Meta):
        include = sparse(POST_DETAIL_FIELDS)


class BulkPostsQuery(SparseQuery):
    ids = IdList(max_items=IDS_MAX, required=True, metadata={"description": "Up to 100 post ids, in the order wanted."})

    class Meta(StrictQuery.Meta):
        include = sparse(POST_FIELDS)


class TagsQuery(StrictQuery):
    limit = fields.Integer(
        load_default=TAGS_LIMIT_DEFAULT,
        validate=validate.Range(1, TAGS_LIMIT_MAX),
        metadata={"description": "How many of the top tags."},
    )


class NoQuery(StrictQuery):
    """For endpoints that take no query parameters at all."""


page_query = PageQuery()
feed_query = FeedQuery()
comments_query = CommentsQuery()
post_query = PostQuery()
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
