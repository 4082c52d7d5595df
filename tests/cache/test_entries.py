"""Stored entries carry their media type, flags, validator and the time their content last
changed; address records keep that time across re-renders."""

from __future__ import annotations

import struct

import pytest

from app.cache.entries import MEDIA_TYPES, Entry, Rendered, decode_record, encode_record


@pytest.mark.parametrize("media_type", MEDIA_TYPES)
@pytest.mark.parametrize(("templated", "negative"), [(False, False), (True, False), (False, True)])
def test_an_entry_round_trips(media_type: str, templated: bool, negative: bool) -> None:
    rendered = Rendered(
        200, b'{"a": "\\u0000/x"}', 'W/"abc"', '<\x00/x?cursor=a>; rel="next"', media_type, templated, negative
    )
    entry = Entry(rendered, 1000.5, 1030.25, 990.0)
    assert Entry.decode(entry.encode()) == entry


def test_entries_of_earlier_layouts_and_unknown_media_types_are_misses() -> None:
    rw1 = b"RW1" + struct.pack(">ddHBI", 1.0, 2.0, 200, 0, 0) + b"{}"
    rw2 = b"RW2" + struct.pack(">ddHBBI", 1.0, 2.0, 200, 0, 0, 0) + b"{}"
    assert Entry.decode(rw1) is None and Entry.decode(rw2) is None
    encoded = bytearray(Entry(Rendered(200, b"{}", 'W/"x"'), 1.0, 2.0, 1.0).encode())
    encoded[3 + 8 + 8 + 8 + 2] = len(MEDIA_TYPES)  # a media type this version does not know
    assert Entry.decode(bytes(encoded)) is None


def test_address_records_round_trip_and_garbage_is_none() -> None:
    assert decode_record(encode_record('W/"abc"', 1234.5)) == ('W/"abc"', 1234.5)
    assert decode_record(None) is None and decode_record(b"xy") is None
