"""What the cache stores: a rendered page and its timestamps, as bytes.

The cache does not interpret a rendering; it keeps what the HTTP layer gave it (status, body,
Link template, media type, validator) and two facts of its own: when the entry stops being
fresh, and when the page's content last changed (kept across re-renders of identical bytes,
recognised by an unchanged validator).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

# Media types an entry can carry; an entry stores the index, so only ever append.
MEDIA_TYPES = (
    "application/json",
    "application/problem+json",
    "application/feed+json",
    "application/atom+xml",
)
_MEDIA_INDEX = {media_type: index for index, media_type in enumerate(MEDIA_TYPES)}

# stored_at, fresh_until, modified_at, status, media type index, flags, validator length, link length
_HEAD = struct.Struct(">dddHBBHI")
_MAGIC = b"RW3"  # earlier layouts (RW1, RW2) read as misses
_TEMPLATED = 1
_NEGATIVE = 2
_RECORD = struct.Struct(">d")  # an address record: modified_at, then the validator


@dataclass(frozen=True, slots=True)
class Rendered:
    """A response as the cache keeps it. `templated`: the body holds root-URL placeholders;
    `negative`: it renders an absence (kept for the short negative TTL); `etag`: a validator
    derived from the content (equal validators mean equal bytes)."""

    status: int
    body: bytes
    etag: str
    link: str = ""
    media_type: str = MEDIA_TYPES[0]
    templated: bool = False
    negative: bool = False


@dataclass(frozen=True, slots=True)
class Entry:
    rendered: Rendered
    stored_at: float
    fresh_until: float
    modified_at: float

    def encode(self) -> bytes:
        rendered = self.rendered
        etag, link = rendered.etag.encode(), rendered.link.encode()
        flags = (_TEMPLATED if rendered.templated else 0) | (_NEGATIVE if rendered.negative else 0)
        head = _HEAD.pack(
            self.stored_at,
            self.fresh_until,
            self.modified_at,
            rendered.status,
            _MEDIA_INDEX[rendered.media_type],
            flags,
            len(etag),
            len(link),
        )
        return b"".join((_MAGIC, head, etag, link, rendered.body))

    @classmethod
    def decode(cls, raw: bytes | None) -> Entry | None:
        if not raw or not raw.startswith(_MAGIC):
            return None
        stored_at, fresh_until, modified_at, status, media, flags, etag_len, link_len = _HEAD.unpack_from(
            raw, len(_MAGIC)
        )
        if media >= len(MEDIA_TYPES):
            return None
        start = len(_MAGIC) + _HEAD.size
        link_start = start + etag_len
        body_start = link_start + link_len
        rendered = Rendered(
            status,
            raw[body_start:],
            raw[start:link_start].decode(),
            raw[link_start:body_start].decode(),
            MEDIA_TYPES[media],
            bool(flags & _TEMPLATED),
            bool(flags & _NEGATIVE),
        )
        return cls(rendered, stored_at, fresh_until, modified_at)


def encode_record(etag: str, modified_at: float) -> bytes:
    """An address record: the page's last validator and when its content last changed."""
    return _RECORD.pack(modified_at) + etag.encode()


def decode_record(raw: bytes | None) -> tuple[str, float] | None:
    if not raw or len(raw) < _RECORD.size:
        return None
    return raw[_RECORD.size :].decode(), _RECORD.unpack_from(raw)[0]
