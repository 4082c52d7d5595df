"""How rows become the contract's resource dicts: one builder per resource, in response order
(app/schemas/resources.py lists the same fields; tests keep the two in step)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from flask import current_app

from app.urls import POSTS_PATH, ROOT_URL

UrlOf = Callable[[int, str], str]  # (post id, slug) -> the post's `url`


def post_urls() -> UrlOf:
    """How this app spells a post's `url`, always absolute (as careful public APIs and the
    contract's Link headers do): `<PUBLIC_SITE_URL>/posts/<slug>` when the deployment has a web
    site, else the API's own `/api/v1/posts/<id>` under PUBLIC_BASE_URL, else under ROOT_URL
    (the request's host, filled in per request by app/http/respond.py). Read once per page."""
    config = current_app.config
    site = config["PUBLIC_SITE_URL"]
    if site:
        return lambda post_id, slug: f"{site}/posts/{slug}"
    root = (config["PUBLIC_BASE_URL"] or ROOT_URL) + POSTS_PATH
    return lambda post_id, slug: f"{root}{post_id}"


def author_item(author_id: int, username: str, display_name: str, avatar_url: str | None) -> dict[str, Any]:
    """An author as lists embed it (posts, comments)."""
    return {"id": author_id, "username": username, "display_name": display_name, "avatar_url": avatar_url}


def post_item(row: Any, url_of: UrlOf, body: str | None = None, tags: list[Any] | None = None) -> dict[str, Any]:
    """A post from a row of app/services/posts.py:LIST_COLUMNS; `body` on the detail view (and
    for the syndication feeds, which carry it as their content); `tags` when the row brought
    them (else filled in afterwards)."""
    (pid, slug, title, summary, published_at, updated_at, comment_count,
     aid, username, display_name, avatar_url, cid, cslug, cname) = tuple(row)[:14]  # fmt: skip
    item: dict[str, Any] = {"id": pid, "slug": slug, "title": title, "summary": summary}
    if body is not None:
        item["body"] = body
    item.update(
        url=url_of(pid, slug),
        published_at=published_at,
        updated_at=updated_at,
        author=author_item(aid, username, display_name, avatar_url),
        category={"id": cid, "slug": cslug, "name": cname},
        tags=[] if tags is None else tags,
        comment_count=comment_count,
    )
    return item


def comment_item(
    comment_id: int, post_id: int, author: dict[str, Any], body: str, created_at: datetime
) -> dict[str, Any]:
    return {"id": comment_id, "post_id": post_id, "author": author, "body": body, "created_at": created_at}
