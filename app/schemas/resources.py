"""The public fields of each resource, in response order (the contract's domain table).

Sparse fieldsets (`?fields=`) are validated against these, the OpenAPI document describes them,
and tests check that the service dicts carry exactly these keys, so the three cannot drift.
"""

from __future__ import annotations

POST_FIELDS = (
    "id",
    "slug",
    "title",
    "summary",
    "url",
    "published_at",
    "updated_at",
    "author",
    "category",
    "tags",
    "comment_count",
)
# Detail adds the body, right after the summary (app/services/items.py:post_item).
POST_DETAIL_FIELDS = (*POST_FIELDS[:4], "body", *POST_FIELDS[4:])
COMMENT_FIELDS = ("id", "post_id", "author", "body", "created_at")
