"""Feed documents for feed readers: JSON Feed 1.1 and Atom (RFC 4287), paged as in RFC 5005.

Plain functions from a page of post items (app/services/posts.py:post_item, with `body`) to
bytes. Atom is built with ElementTree, which escapes markup in text and attributes; characters
XML 1.0 cannot carry at all (control characters a title may still hold) are replaced before
they reach it. URLs under the API carry the ROOT_URL placeholder (app/http/respond.py fills it
per request). Bodies are plain text (the write API and the seed store no markup): the content
is that text as HTML paragraphs, every character escaped by markupsafe (body_html).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any
from xml.etree.ElementTree import Element, SubElement, tostring

import orjson
from markupsafe import escape

JSON_FEED_VERSION = "https://jsonfeed.org/version/1.1"
ATOM_NAMESPACE = "http://www.w3.org/2005/Atom"
GENERATOR = "Readwire"
# An empty page's Atom `updated` (required by RFC 4287): a constant, so its bytes never change.
EMPTY_UPDATED = datetime(1970, 1, 1, tzinfo=UTC)
_JSON_OPTIONS = orjson.OPT_NAIVE_UTC | orjson.OPT_UTC_Z | orjson.OPT_OMIT_MICROSECONDS
# Everything outside XML 1.0's Char production (C0 controls but tab/LF/CR, U+FFFE/U+FFFF, lone surrogates).
_NOT_XML = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n\s*")
# Posts whose content is kept rendered (a post sits on several feeds, in two formats, and a page
# re-renders on every change of its namespace): a body and its HTML, ~4 kB each, ~4 MB per process.
BODY_HTML_MEMO = 1024


@dataclass(frozen=True, slots=True)
class FeedDocument:
    """What a feed says about itself; URLs are absolute (or ROOT_URL-relative)."""

    title: str
    feed_url: str  # the feed's first page in this format: also its permanent id
    page_url: str  # this page (RFC 5005 rel="self")
    home_page_url: str  # the site (or the API's JSON list of the same feed)
    home_page_type: str | None  # its media type (None: not said; readers take a typeless alternate as the website)
    next_url: str | None  # older items
    prev_url: str | None  # newer items (pollers resume from here)
    api_root: str  # base of the API's own URLs (category and tag schemes)
    item_type: str | None  # media type of what an item's URL serves (None: not said)
    hub_url: str | None = None  # the WebSub hub readers may subscribe at (WEBSUB_HUB_URL)


@lru_cache(maxsize=BODY_HTML_MEMO)
def body_html(body: str) -> str:
    """A plain-text body as HTML: blank-line-separated paragraphs, line breaks kept, all text
    escaped. The body is escaped once, whole (escaping leaves whitespace alone, so paragraphs and
    lines split the same), and memoized by its text: a post is rendered once, not once per page."""
    text = str(escape(body))
    return "".join(f"<p>{'<br>'.join(p.splitlines())}</p>" for p in map(str.strip, _PARAGRAPH_BREAK.split(text)) if p)


def json_feed(doc: FeedDocument, items: Sequence[dict[str, Any]]) -> bytes:
    """A JSON Feed 1.1 document (https://www.jsonfeed.org/version/1.1/)."""
    feed: dict[str, Any] = {
        "version": JSON_FEED_VERSION,
        "title": doc.title,
        "home_page_url": doc.home_page_url,
        "feed_url": doc.feed_url,
    }
    if doc.next_url:
        feed["next_url"] = doc.next_url
    if doc.hub_url:
        feed["hubs"] = [{"type": "WebSub", "url": doc.hub_url}]
    feed["items"] = [_json_item(item) for item in items]
    # Extension (leading underscore, as the spec asks): where a poller resumes for newer items.
    feed["_readwire"] = {"prev_url": doc.prev_url}
    return orjson.dumps(feed, option=_JSON_OPTIONS)


def _json_item(item: dict[str, Any]) -> dict[str, Any]:
    author = item["author"]
    person = {"name": author["display_name"]}
    if author["avatar_url"]:
        person["avatar"] = author["avatar_url"]
    url = item["url"]
    entry: dict[str, Any] = {
        "id": url,
        "url": url,
        "title": item["title"],
        "content_html": body_html(item["body"]),
    }
    if item["summary"]:
        entry["summary"] = item["summary"]
    entry.update(
        date_published=item["published_at"],
        date_modified=item["updated_at"],
        authors=[person],
        tags=[item["category"]["name"], *(tag["name"] for tag in item["tags"])],
        _readwire={"id": item["id"], "comment_count": item["comment_count"]},
    )
    return entry


def atom_feed(doc: FeedDocument, items: Sequence[dict[str, Any]]) -> bytes:
    """An Atom 1.0 feed document; `updated` is the newest item's, or EMPTY_UPDATED for an empty
    page: never the render time, so re-rendering an unchanged page gives the same bytes (and
    ETag), and a poller of an empty feed keeps getting 304s."""
    feed = Element("feed", xmlns=ATOM_NAMESPACE)
    _plain(feed, "id", doc.feed_url)
    _text(feed, "title", doc.title)
    _plain(feed, "updated", _timestamp(max((item["updated_at"] for item in items), default=EMPTY_UPDATED)))
    _link(feed, "self", doc.page_url, "application/atom+xml")
    if doc.hub_url:  # WebSub discovery: rel=hub next to rel=self (the topic)
        SubElement(feed, "link", rel="hub", href=doc.hub_url)
    _link(feed, "alternate", doc.home_page_url, doc.home_page_type)
    if doc.next_url:
        _link(feed, "next", doc.next_url, "application/atom+xml")
    if doc.prev_url:
        _link(feed, "previous", doc.prev_url, "application/atom+xml")
    _plain(feed, "generator", GENERATOR)
    for item in items:
        _atom_entry(feed, item, doc)
    return tostring(feed, encoding="utf-8", xml_declaration=True)


def _atom_entry(feed: Element, item: dict[str, Any], doc: FeedDocument) -> None:
    api_root, url = doc.api_root, item["url"]
    entry = SubElement(feed, "entry")
    _plain(entry, "id", url)
    _text(entry, "title", item["title"])
    _link(entry, "alternate", url, doc.item_type)
    _plain(entry, "published", _timestamp(item["published_at"]))
    _plain(entry, "updated", _timestamp(item["updated_at"]))
    author = SubElement(entry, "author")
    _text(author, "name", item["author"]["display_name"])
    category = item["category"]
    _category(entry, category["slug"], category["name"], f"{api_root}/categories")
    for tag in item["tags"]:
        _category(entry, tag["slug"], tag["name"], f"{api_root}/tags")
    summary = _text(entry, "summary", item["summary"] or item["title"])
    summary.set("type", "text")
    content = _text(entry, "content", body_html(item["body"]))  # HTML as text: ElementTree escapes it again
    content.set("type", "html")


def _xml(value: str) -> str:
    return _NOT_XML.sub("\ufffd", value)


def _text(parent: Element, tag: str, value: str) -> Element:
    """An element holding user text (escaped by ElementTree, made XML-safe here)."""
    return _plain(parent, tag, _xml(value))


def _plain(parent: Element, tag: str, value: str) -> Element:
    """An element holding text this module built (URLs, which may hold ROOT_URL; timestamps)."""
    element = SubElement(parent, tag)
    element.text = value
    return element


def _link(parent: Element, rel: str, href: str, media_type: str | None) -> None:
    if media_type is None:
        SubElement(parent, "link", rel=rel, href=href)
    else:
        SubElement(parent, "link", rel=rel, type=media_type, href=href)


def _category(parent: Element, term: str, label: str, scheme: str) -> None:
    SubElement(parent, "category", term=_xml(term), label=_xml(label), scheme=scheme)


def _timestamp(value: datetime) -> str:
    """RFC 3339 UTC with a Z (SQLite hands back naive UTC)."""
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")
