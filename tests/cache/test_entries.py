"""Stored entries carry their media type and whether the body holds root-URL placeholders."""

from __future__ import annotations

import struct

import pytest

from app.cache.pages import ATOM, FEED_JSON, JSON, MEDIA_TYPES, PROBLEM_MIMETYPE, Entry, Rendered


@pytest.mark.parametrize("media_type", [JSON, PROBLEM_MIMETYPE, FEED_JSON, ATOM])
@pytest.mark.parametrize("templated", [False, True])
def test_an_entry_round_trips(media_type: str, templated: bool) -> None:
    rendered = Rendered(200, b'{"a": "\\u0000/x"}', '<\x00?cursor=a>; rel="next"', media_type, templated)
    entry = Entry(rendered, 1000.5, 1030.25)
    assert Entry.decode(entry.encode()) == entry


def test_entries_of_the_previous_layout_and_unknown_media_types_are_misses() -> None:
    old = b"RW1" + struct.pack(">ddHBI", 1.0, 2.0, 200, 0, 0) + b"{}"  # before media types were stored
    assert Entry.decode(old) is None
    encoded = bytearray(Entry(Rendered(200, b"{}"), 1.0, 2.0).encode())
    encoded[3 + 8 + 8 + 2] = len(MEDIA_TYPES)  # a media type this version does not know
    assert Entry.decode(bytes(encoded)) is None
