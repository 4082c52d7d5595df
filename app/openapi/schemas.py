"""Response shapes for the OpenAPI document only: the read path builds plain dicts (no
marshmallow dump), these describe them. Every object is closed (`additionalProperties: false`),
so a field the document does not know fails the conformance tests."""

from __future__ import annotations

from typing import Any

from marshmallow import RAISE, Schema, fields, validate

from app.errors import PROBLEM_CODES


class Closed(Schema):
    class Meta:
        unknown = RAISE  # apispec: additionalProperties false


def _required(**kwargs: Any) -> dict[str, Any]:
    return {"required": True, **kwargs}


class AuthorRef(Closed):
    id = fields.Integer(**_required())
    username = fields.String(**_required())
    display_name = fields.String(**_required())
    avatar_url = fields.String(**_required(allow_none=True))


class CategoryRef(Closed):
    id = fields.Integer(**_required())
    slug = fields.String(**_required())
    name = fields.String(**_required())


class TagRef(CategoryRef):
    pass


_SPARSE = "Every field unless `fields` names a subset (then exactly those)."


class Post(Closed):
    class Meta(Closed.Meta):
        description = "A post in a list. " + _SPARSE

    id = fields.Integer()
    slug = fields.String()
    title = fields.String()
    summary = fields.String()
    url = fields.Url(
        metadata={
            "description": "The post's page: `<PUBLIC_SITE_URL>/posts/<slug>` when the deployment has a web site, "
            "else this API's own `/api/v1/posts/<id>`, absolute (under PUBLIC_BASE_URL, else the requesting host)."
        }
    )
    published_at = fields.DateTime()
    updated_at = fields.DateTime()
    author = fields.Nested(AuthorRef)
    category = fields.Nested(CategoryRef)
    tags = fields.List(fields.Nested(TagRef))
    comment_count = fields.Integer(metadata={"description": "May lag by up to the list's cache TTL."})


class PostDetail(Post):
    class Meta(Closed.Meta):
        description = "One post with its body. " + _SPARSE

    body = fields.String()


class WrittenPost(Closed):
    """A post as a write returns it: the detail plus `status`; a draft has no `published_at`."""

    id = fields.Integer(**_required())
    slug = fields.String(**_required())
    title = fields.String(**_required())
    summary = fields.String(**_required())
    body = fields.String(**_required())
    url = fields.Url(**_required())
    published_at = fields.DateTime(**_required(allow_none=True))
    updated_at = fields.DateTime(**_required())
    author = fields.Nested(AuthorRef, **_required())
    category = fields.Nested(CategoryRef, **_required())
    tags = fields.List(fields.Nested(TagRef), **_required())
    comment_count = fields.Integer(**_required())
    status = fields.String(**_required(validate=validate.OneOf(["draft", "published"])))


class Comment(Closed):
    class Meta(Closed.Meta):
        description = "A comment. " + _SPARSE

    id = fields.Integer()
    post_id = fields.Integer()
    author = fields.Nested(AuthorRef)
    body = fields.String()
    created_at = fields.DateTime()


class WrittenComment(Closed):
    id = fields.Integer(**_required())
    post_id = fields.Integer(**_required())
    author = fields.Nested(AuthorRef, **_required())
    body = fields.String(**_required())
    created_at = fields.DateTime(**_required())


class PageMeta(Closed):
    limit = fields.Integer(**_required())
    next_cursor = fields.String(
        **_required(
            allow_none=True,
            metadata={
                "description": "The next page: older posts on feeds, newer comments, later authors; null at the end."
            },
        )
    )
    prev_cursor = fields.String(
        **_required(
            allow_none=True,
            metadata={"description": "The page before: newer posts on feeds (always present there, for polling)."},
        )
    )


class PostPage(Closed):
    data = fields.List(fields.Nested(Post), **_required())
    meta = fields.Nested(PageMeta, **_required())


class CommentPage(Closed):
    data = fields.List(fields.Nested(Comment), **_required())
    meta = fields.Nested(PageMeta, **_required())


class PostList(Closed):
    data = fields.List(fields.Nested(Post), **_required())


class CategoryCount(CategoryRef):
    post_count = fields.Integer(**_required())


class TagCount(CategoryCount):
    pass


class CategoryList(Closed):
    data = fields.List(fields.Nested(CategoryCount), **_required())


class LimitMeta(Closed):
    limit = fields.Integer(**_required())


class TagList(Closed):
    data = fields.List(fields.Nested(TagCount), **_required())
    meta = fields.Nested(LimitMeta, **_required())


class AuthorPage(Closed):
    data = fields.List(fields.Nested(AuthorRef), **_required())
    meta = fields.Nested(PageMeta, **_required())


class AuthorDetail(AuthorRef):
    bio = fields.String(**_required())
    created_at = fields.DateTime(**_required())
    post_count = fields.Integer(**_required())


class Problem(Closed):
    class Meta(Closed.Meta):
        description = "RFC 9457 problem details; `code` is stable and machine-readable."

    type = fields.String(**_required(metadata={"description": "`/problems/<code>`"}))
    title = fields.String(**_required())
    status = fields.Integer(**_required())
    detail = fields.String(**_required())
    code = fields.String(**_required(validate=validate.OneOf(PROBLEM_CODES)))
    errors = fields.Dict(
        keys=fields.String(),
        values=fields.List(fields.String()),
        metadata={"description": "Messages per parameter or body field (validation errors)."},
    )


class Tokens(Closed):
    access_token = fields.String(**_required(metadata={"description": "JWT, 15 minutes."}))
    refresh_token = fields.String(**_required(metadata={"description": "JWT, 7 days: POST /auth/refresh."}))
    token_type = fields.String(**_required(validate=validate.OneOf(["Bearer"])))
    expires_in = fields.Integer(**_required(metadata={"description": "Seconds the access token lives."}))


class AccessToken(Closed):
    access_token = fields.String(**_required())
    token_type = fields.String(**_required(validate=validate.OneOf(["Bearer"])))
    expires_in = fields.Integer(**_required())


class Health(Closed):
    status = fields.String(**_required(validate=validate.OneOf(["ok"])))


class ReadyChecks(Closed):
    database = fields.String(**_required(validate=validate.OneOf(["ok", "down"])))
    cache = fields.String(**_required(validate=validate.OneOf(["ok", "down"])))


class Ready(Closed):
    status = fields.String(**_required(validate=validate.OneOf(["ok", "degraded", "unavailable"])))
    checks = fields.Nested(ReadyChecks, **_required())


class JsonFeedAuthor(Closed):
    name = fields.String(**_required())
    avatar = fields.Url()


class JsonFeedItemExtension(Closed):
    id = fields.Integer(**_required())
    comment_count = fields.Integer(**_required())


class JsonFeedItem(Closed):
    id = fields.String(**_required(metadata={"description": "The post's URL (absolute)."}))
    url = fields.Url(**_required())
    title = fields.String(**_required())
    content_html = fields.String(
        **_required(metadata={"description": "The post body as HTML paragraphs (plain text, escaped)."})
    )
    summary = fields.String()
    date_published = fields.DateTime(**_required())
    date_modified = fields.DateTime(**_required())
    authors = fields.List(fields.Nested(JsonFeedAuthor), **_required())
    tags = fields.List(fields.String(), **_required(metadata={"description": "Category, then tags, by name."}))
    readwire = fields.Nested(JsonFeedItemExtension, data_key="_readwire", **_required())


class JsonFeedExtension(Closed):
    prev_url = fields.String(**_required(allow_none=True, metadata={"description": "Newer items, for polling."}))


class JsonFeed(Closed):
    class Meta(Closed.Meta):
        description = "JSON Feed 1.1 (https://www.jsonfeed.org/version/1.1/)."

    version = fields.String(**_required(validate=validate.OneOf(["https://jsonfeed.org/version/1.1"])))
    title = fields.String(**_required())
    home_page_url = fields.Url(
        **_required(metadata={"description": "PUBLIC_SITE_URL, else this feed as the API's JSON list."})
    )
    feed_url = fields.Url(**_required())
    next_url = fields.Url(metadata={"description": "Older items (absent at the end)."})
    items = fields.List(fields.Nested(JsonFeedItem), **_required())
    readwire = fields.Nested(JsonFeedExtension, data_key="_readwire", **_required())
