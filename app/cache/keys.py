"""Cache keys: generation counters per namespace and normalized, versioned page keys.

A page key embeds the current generation of every namespace the page depends on, plus the
store's epoch (a random value created when the store is empty, so a restarted Redis never
matches keys written before it lost its counters). Invalidation is one INCR per namespace.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

PREFIX = "rw:"
EPOCH_KEY = PREFIX + "epoch"
GENERATION_PREFIX = PREFIX + "gen:"


def generation_key(namespace: str) -> str:
    return GENERATION_PREFIX + namespace


def normalize(params: Mapping[str, Any]) -> str:
    """Validated parameters (defaults filled in) in one canonical order."""
    return "&".join(f"{key}={params[key]}" for key in sorted(params))


def page_key(endpoint: str, params: Mapping[str, Any], epoch: bytes, generations: Iterable[bytes | None]) -> str:
    versions = ".".join((g or b"0").decode() for g in generations)
    return f"{PREFIX}p:{epoch.decode()}:{endpoint}?{normalize(params)}@{versions}"


def etag_for(key: str, bucket: int) -> str:
    """Weak ETag from the versioned key (so from the generations) and the counter-lag bucket."""
    digest = hashlib.blake2b(f"{key}#{bucket}".encode(), digest_size=12).digest()
    return 'W/"' + base64.urlsafe_b64encode(digest).decode() + '"'


def content_etag(body: bytes) -> str:
    """ETag when the cache is unreachable: from the bytes themselves."""
    digest = hashlib.blake2b(body, digest_size=12).digest()
    return 'W/"c' + base64.urlsafe_b64encode(digest).decode() + '"'
