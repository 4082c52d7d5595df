"""Cache keys: generation counters per namespace and normalized, versioned page keys.

A page key embeds the current generation of every namespace the page depends on, plus the
store's epoch (a random value created when the store is empty, so a restarted Redis never
matches keys written before it lost its counters) and the tag of the Redis primary's dataset
(its replid, app/cache/discovery.py: a promoted replica may have lost the last INCRs, so its
generations are never matched with pages stored before the failover). Invalidation is one INCR
per namespace.

Next to each page sits its address record (`rw:a:...`, unversioned): the validator and the
time the page's content last changed, so a page re-rendered under a new generation with the
same bytes keeps its Last-Modified.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

PREFIX = "rw:"
EPOCH_KEY = PREFIX + "epoch"
GENERATION_PREFIX = PREFIX + "gen:"
# Next to each generation: the commit LSN of the last write that bumped it (app/replicas.py).
# Not mirrored by the near cache: a miss reads them atomically with its lookup.
LSN_PREFIX = PREFIX + "lsn:"
LOCK_SUFFIX = "#lock"


def generation_key(namespace: str) -> str:
    return GENERATION_PREFIX + namespace


def lsn_key(namespace: str) -> str:
    return LSN_PREFIX + namespace


def normalize(params: Mapping[str, Any]) -> str:
    """Validated parameters (defaults filled in) in one canonical order."""
    return "&".join(f"{key}={params[key]}" for key in sorted(params))


def address(endpoint: str, params: Mapping[str, Any]) -> str:
    """What a page is, whatever version: the endpoint and its normalized parameters."""
    return f"{endpoint}?{normalize(params)}"


def page_key(page_address: str, epoch: bytes, generations: Iterable[bytes | None]) -> str:
    versions = ".".join((g or b"0").decode() for g in generations)
    return f"{PREFIX}p:{epoch.decode()}:{page_address}@{versions}"


def degraded_key(page_address: str, token: str) -> str:
    """A page's key while Redis is unreachable: its generations as the database knows them
    (app/cache/generations.py), in a space of its own (never a Redis key, never stored there)."""
    return f"{PREFIX}d:{token}:{page_address}"


def address_key(page_address: str, epoch: bytes) -> str:
    return f"{PREFIX}a:{epoch.decode()}:{page_address}"


def lock_key(key: str) -> str:
    return key + LOCK_SUFFIX
