"""SQLAlchemy models; importing this package registers every table on the metadata."""

from __future__ import annotations

from app.models.author import Author
from app.models.comment import Comment
from app.models.event import PostEvent
from app.models.idempotency import IdempotencyKey
from app.models.outbox import CacheGeneration, CacheOutbox
from app.models.popular import PopularRank, PopularSnapshot
from app.models.post import Post, PostTag
from app.models.taxonomy import Category, Tag
from app.models.websub import WebSubOutbox

__all__ = [
    "Author",
    "CacheGeneration",
    "CacheOutbox",
    "Category",
    "Comment",
    "IdempotencyKey",
    "PopularRank",
    "PopularSnapshot",
    "Post",
    "PostEvent",
    "PostTag",
    "Tag",
    "WebSubOutbox",
]
