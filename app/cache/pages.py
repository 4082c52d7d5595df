"""The cached read path: whole responses stored as bytes under generation-versioned keys.

Per request: one MGET (epoch + generations) answers a 304 with no SQL and no serialization;
one GET serves a hit. An entry stays fresh for its TTL (with jitter) and is kept a while
longer as stale: one worker, holding a short lock, recomputes it while the others serve the
stale bytes; when the database is down the stale bytes are served with an Age header. A miss
takes the same lock, so a hundred concurrent misses run the query once. 404s are cached
briefly; 5xx never. When the cache is unreachable, pages come straight from the database.
"""

from __future__ import annotations

import logging
import random
import secrets
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.utils import formatdate, parsedate_to_datetime
from typing import Any
from xml.sax.saxutils import escape as xml_escape

import orjson
from flask import Flask, Response, current_app, request
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from app.cache.invalidation import Invalidator
from app.cache.keys import EPOCH_KEY, content_etag, etag_for, generation_key, page_key
from app.cache.near import HotEntries
from app.cache.store import LocalStore, Store
from app.errors import PROBLEM_MIMETYPE, ApiError, problem_body

log = logging.getLogger(__name__)

LINK_BASE = "\x00"  # placeholder for the request's absolute URL inside a stored Link header
# Placeholder for the API's root URL (scheme://host[/prefix]) inside a templated body: syndication
# documents carry absolute URLs, but a stored page must not carry the Host of whoever filled it.
# NUL never occurs in stored text (PostgreSQL refuses it), so the placeholder cannot collide.
ROOT_URL = "\x00"

JSON = "application/json"
FEED_JSON = "application/feed+json"
ATOM = "application/atom+xml"
# Media types an entry can carry; an entry stores the index, so only ever append.
MEDIA_TYPES = (JSON, PROBLEM_MIMETYPE, FEED_JSON, ATOM)
_MEDIA_INDEX = {media_type: index for index, media_type in enumerate(MEDIA_TYPES)}
_CONTENT_TYPES = {JSON: JSON, PROBLEM_MIMETYPE: PROBLEM_MIMETYPE, FEED_JSON: FEED_JSON, ATOM: ATOM + "; charset=utf-8"}

_HEAD = struct.Struct(">ddHBBI")  # stored_at, fresh_until, status, media type index, templated, link length
_MAGIC = b"RW2"  # RW1 entries (no media type) read as misses
_UNAVAILABLE = (DBAPIError, PoolTimeout)

# What serve() did, left in the WSGI environ for the metrics and the access log.
CACHE_OUTCOME = "readwire.cache"


@dataclass(frozen=True, slots=True)
class Rendered:
    """A response as the cache keeps it: status, body bytes, the Link template, the media type,
    and whether the body holds ROOT_URL placeholders."""

    status: int
    body: bytes
    link: str = ""
    media_type: str = JSON
    templated: bool = False


@dataclass(frozen=True, slots=True)
class Entry:
    rendered: Rendered
    stored_at: float
    fresh_until: float

    def encode(self) -> bytes:
        rendered = self.rendered
        link = rendered.link.encode()
        media = _MEDIA_INDEX[rendered.media_type]
        head = _HEAD.pack(self.stored_at, self.fresh_until, rendered.status, media, rendered.templated, len(link))
        return _MAGIC + head + link + rendered.body

    @classmethod
    def decode(cls, raw: bytes | None) -> Entry | None:
        if not raw or not raw.startswith(_MAGIC):
            return None
        stored_at, fresh_until, status, media, templated, link_len = _HEAD.unpack_from(raw, len(_MAGIC))
        if media >= len(MEDIA_TYPES):
            return None
        start = len(_MAGIC) + _HEAD.size
        link = raw[start : start + link_len].decode()
        rendered = Rendered(status, raw[start + link_len :], link, MEDIA_TYPES[media], bool(templated))
        return cls(rendered, stored_at, fresh_until)


@dataclass(frozen=True, slots=True)
class Policy:
    """How one endpoint family is cached (TTLs in seconds)."""

    ttl: float
    cache_control: str


class PageCache:
    def __init__(self, store: Store, config: dict[str, Any], invalidator: Invalidator) -> None:
        self.store = store
        self.invalidator = invalidator
        # Hot entries in-process only in front of a remote store (the local one is in-process).
        local_bytes = int(config["CACHE_LOCAL_BYTES"])
        self.hot = HotEntries(local_bytes) if local_bytes > 0 and not isinstance(store, LocalStore) else None
        self.negative_ttl = float(config["CACHE_NEGATIVE_TTL"])
        self.stale_ttl = float(config["CACHE_STALE_TTL"])
        self.jitter = float(config["CACHE_JITTER"])
        self.lock_ttl = float(config["CACHE_LOCK_TTL"])
        self.wait = float(config["CACHE_MISS_WAIT"])  # total, across lock holders
        control = config["HTTP_CACHE_CONTROL"]
        self.policies = {
            "feed": Policy(float(config["CACHE_TTL_FEED"]), control),
            "post": Policy(float(config["CACHE_TTL_POST"]), control),
            "directory": Policy(float(config["CACHE_TTL_DIRECTORY"]), control),
            "popular": Policy(float(config["CACHE_TTL_POPULAR"]), control),
        }

    def _drain_outbox(self) -> None:
        try:
            self.invalidator.drain()
        except _UNAVAILABLE:
            log.warning("outbox not drained: database unavailable")

    def versions(self, namespaces: Sequence[str]) -> tuple[bytes, list[bytes | None]] | None:
        """(epoch, generations) in one round trip, or None when the cache is unreachable.

        Invalidations Redis could not take (the outbox) are applied first, so nothing written
        while it was away is served stale once it is back.
        """
        if self.invalidator.pending:
            self._drain_outbox()
        keys = [EPOCH_KEY, *map(generation_key, namespaces)]
        values = self.store.versions(keys)
        if values is not None and self.invalidator.pending:  # Redis recovered during this call
            self._drain_outbox()
            values = self.store.versions(keys)
        if values is None:
            return None
        epoch, generations = values[0], values[1:]
        if epoch is None:  # empty store (first start, or Redis lost its data): new epoch
            candidate = secrets.token_hex(4).encode()
            if not self.store.add(EPOCH_KEY, candidate, ttl=10 * 365 * 86400):
                return self.versions(namespaces)
            epoch = candidate
        return epoch, generations

    def get(self, key: str) -> Entry | None:
        """The entry under `key`: a fresh in-process copy, else whatever the store holds."""
        return self.hot_entry(key, time.time()) or self.fetch(key)

    def hot_entry(self, key: str, now: float) -> Entry | None:
        """A fresh in-process copy of the entry under `key` (no round trip), if there is one."""
        if self.hot is None:
            return None
        entry: Entry | None = self.hot.get(key)
        return entry if entry is not None and entry.fresh_until > now else None

    def fetch(self, key: str) -> Entry | None:
        """The entry under `key` from the store (kept in-process for the next hit)."""
        values = self.store.mget([key])
        entry = Entry.decode(values[0]) if values else None
        if self.hot is not None and entry is not None:
            self.hot.put(key, entry, len(values[0]))  # type: ignore[index, arg-type]
        return entry

    def put(self, key: str, rendered: Rendered, ttl: float) -> Entry:
        now = time.time()
        fresh = (self.negative_ttl if rendered.status == 404 else ttl) * (1 + random.uniform(-self.jitter, self.jitter))
        entry = Entry(rendered, now, now + fresh)
        encoded = entry.encode()
        self.store.set(key, encoded, fresh + self.stale_ttl)
        if self.hot is not None:
            self.hot.put(key, entry, len(encoded))
        return entry

    def lock(self, key: str) -> bool:
        return self.store.add(key + "#lock", b"1", self.lock_ttl)

    def unlock(self, key: str) -> None:
        self.store.delete(key + "#lock")

    def wait_for(self, key: str) -> Entry | None:
        """Another worker holds the lock: poll for its entry until the lock is released."""
        delay = 0.005
        while True:
            time.sleep(delay)
            entry, lock = self.store.mget([key, key + "#lock"]) or (None, None)
            if entry is not None:
                return Entry.decode(entry)
            if lock is None:
                return None
            delay = min(delay * 2, 0.05)


def page_cache() -> PageCache:
    cache: PageCache = current_app.extensions["readwire.cache"]
    return cache


def init_page_cache(app: Flask, store: Store) -> None:
    app.extensions["readwire.cache"] = PageCache(store, app.config, app.extensions["readwire.invalidator"])


def _render(compute: Callable[[], Rendered]) -> Rendered:
    """Run the page computation; a 404 becomes a cacheable rendering, anything else raises."""
    try:
        return compute()
    except ApiError as exc:
        if exc.status != 404:
            raise
        return Rendered(404, problem_body(exc), media_type=PROBLEM_MIMETYPE)


def _respond(rendered: Rendered, etag: str, policy: Policy, stored_at: float, age: float | None = None) -> Response:
    body = _fill_root(rendered) if rendered.templated else rendered.body
    response = Response(body, status=rendered.status, content_type=_CONTENT_TYPES[rendered.media_type])
    headers = response.headers
    headers["ETag"] = etag
    headers["Last-Modified"] = formatdate(stored_at, usegmt=True)
    headers["Cache-Control"] = policy.cache_control
    headers["Vary"] = "Accept-Encoding"
    if rendered.link:
        headers["Link"] = rendered.link.replace(LINK_BASE, _base_url())
    if age is not None:
        headers["Age"] = str(max(0, int(age)))
    return response


_BASE_URLS: dict[tuple[str, str, str, str, str], str] = {}


def _base_url() -> str:
    """The request's absolute URL without the query (for Link), memoized per host and path:
    werkzeug rebuilds and re-quotes it on every access."""
    environ = request.environ
    base = current_app.config["PUBLIC_BASE_URL"]
    key = (base, environ["wsgi.url_scheme"], environ.get("HTTP_HOST", ""), environ.get("SCRIPT_NAME", ""), request.path)
    url = _BASE_URLS.get(key)
    if url is None:
        url = f"{base}{request.path}" if base else request.base_url
        if len(_BASE_URLS) >= 4096:
            _BASE_URLS.clear()
        _BASE_URLS[key] = url
    return url


_ROOTS: dict[tuple[str, str], tuple[bytes, bytes]] = {}


def _fill_root(rendered: Rendered) -> bytes:
    """The body with its ROOT_URL placeholders replaced by this request's root URL, escaped for
    the body's syntax: raw NUL in XML, the string start `"\u0000` in JSON (where orjson escapes
    NUL, and a `"` before the escape can only be the start of a string value)."""
    root = current_app.config["PUBLIC_BASE_URL"] or request.root_url.rstrip("/")
    key = (root, rendered.media_type)
    replacement = _ROOTS.get(key)
    if replacement is None:
        if rendered.media_type == ATOM:
            replacement = (ROOT_URL.encode(), xml_escape(root, {'"': "&quot;"}).encode())
        else:
            replacement = (b'"\\u0000', b'"' + orjson.dumps(root)[1:-1])
        if len(_ROOTS) >= 1024:
            _ROOTS.clear()
        _ROOTS[key] = replacement
    return rendered.body.replace(*replacement)


def _not_modified(etag: str, policy: Policy, last_modified: float | None = None) -> Response:
    response = Response(status=304)
    response.headers["ETag"] = etag
    response.headers["Cache-Control"] = policy.cache_control
    response.headers["Vary"] = "Accept-Encoding"
    if last_modified is not None:
        response.headers["Last-Modified"] = formatdate(last_modified, usegmt=True)
    return response


def _etag_matches(etag: str) -> bool:
    header = request.headers.get("If-None-Match")
    if not header:
        return False
    return header.strip() == "*" or etag in (tag.strip() for tag in header.split(","))


def _unmodified_since(stored_at: float) -> bool:
    if "If-None-Match" in request.headers or "If-Modified-Since" not in request.headers:
        return False
    try:
        since = parsedate_to_datetime(request.headers["If-Modified-Since"]).timestamp()
    except (TypeError, ValueError):
        return False
    return int(stored_at) <= since


def serve(
    endpoint: str, namespaces: Sequence[str], params: dict[str, Any], policy: Policy, compute: Callable[[], Rendered]
) -> Response:
    """Answer a public GET from the cache when possible (see the module docstring). What it did
    (hot_hit, hit, not_modified, stale, refresh, miss, bypass) is left in the environ."""
    cache = page_cache()
    environ = request.environ
    now = time.time()
    versions = cache.versions(namespaces)
    if versions is None:  # cache unreachable: straight from the database, never cached
        environ[CACHE_OUTCOME] = "bypass"
        rendered = _render(compute)
        etag = content_etag(rendered.body)
        if _etag_matches(etag):
            return _not_modified(etag, policy)
        return _respond(rendered, etag, policy, now)

    key = page_key(endpoint, params, *versions)
    etag = etag_for(key, int(now // policy.ttl))
    if _etag_matches(etag):
        environ[CACHE_OUTCOME] = "not_modified"
        return _not_modified(etag, policy)
    entry = cache.hot_entry(key, now)
    outcome = "hot_hit"
    if entry is None:
        entry, outcome = cache.fetch(key), "hit"
    if entry is not None and (entry.fresh_until > now or not cache.lock(key)):
        if _unmodified_since(entry.stored_at):
            environ[CACHE_OUTCOME] = "not_modified"
            return _not_modified(etag, policy, entry.stored_at)
        age = now - entry.stored_at if entry.fresh_until <= now else None
        environ[CACHE_OUTCOME] = outcome if age is None else "stale"
        return _respond(entry.rendered, etag, policy, entry.stored_at, age)
    if entry is not None:  # stale, and this worker holds the refresh lock
        environ[CACHE_OUTCOME] = "refresh"
        try:
            entry = cache.put(key, _render(compute), policy.ttl)
        except _UNAVAILABLE:
            log.warning("database unavailable: serving stale %s", endpoint)
            environ[CACHE_OUTCOME] = "stale"
            return _respond(entry.rendered, etag, policy, entry.stored_at, now - entry.stored_at)
        finally:
            cache.unlock(key)
        return _respond(entry.rendered, etag, policy, entry.stored_at)
    environ[CACHE_OUTCOME] = "miss"
    return _respond_to_miss(cache, key, etag, policy, compute)


def _respond_to_miss(
    cache: PageCache, key: str, etag: str, policy: Policy, compute: Callable[[], Rendered]
) -> Response:
    """Single flight: the lock holder computes; the others wait for its entry while the lock
    lives, and compute themselves only if it vanished without an entry (holder died)."""
    give_up = time.monotonic() + cache.wait
    while True:
        if cache.lock(key):
            try:
                # Double-checked: the previous holder may have stored it since our miss.
                entry = cache.get(key) or cache.put(key, _render(compute), policy.ttl)
            finally:
                cache.unlock(key)
            return _respond(entry.rendered, etag, policy, entry.stored_at)
        waited = cache.wait_for(key)
        if waited is not None:
            return _respond(waited.rendered, etag, policy, waited.stored_at)
        if time.monotonic() > give_up:  # the cache is too slow to coordinate: just answer
            return _respond(_render(compute), etag, policy, time.time())
