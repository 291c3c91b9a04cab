"""`Metadata`: an immutable, ordered multi-map with gRPC's key rules."""

from __future__ import annotations

import pytest

from flare_runtime.metadata import EMPTY_METADATA, Metadata


def test_repeated_keys_keep_every_value_in_order() -> None:
    metadata = Metadata([("x-tag", "a"), ("X-Other", "b"), ("x-TAG", "c")])
    assert metadata["x-tag"] == "c"  # the last one
    assert metadata.get_all("X-Tag") == ["a", "c"]
    assert metadata.get_all("absent") == []
    assert list(metadata) == ["x-tag", "x-other"]  # each key once
    assert len(metadata) == 2
    assert metadata.entries() == (("x-tag", "a"), ("x-other", "b"), ("x-tag", "c"))


def test_keys_are_case_insensitive_and_checked() -> None:
    metadata = Metadata([("Authorization", "Bearer t"), ("trace-bin", b"\x01")])
    assert "authorization" in metadata and "AUTHORIZATION" in metadata
    assert metadata.get("missing") is None
    for bad in ([("", "v")], [("with space", "v")], [("a:b", "v")], [("é", "v")]):
        with pytest.raises(ValueError):
            Metadata(bad)
    with pytest.raises(ValueError, match="-bin"):
        Metadata([("trace-bin", "text")])
    with pytest.raises(ValueError, match="str value"):
        Metadata([("trace", b"bytes")])


def test_adding_makes_a_new_metadata_and_coerce_reuses() -> None:
    first = Metadata({"a": "1"})
    both = first + {"b": "2"}
    assert both.entries() == (("a", "1"), ("b", "2"))
    assert first.entries() == (("a", "1"),)
    assert Metadata.coerce(first) is first
    assert Metadata.coerce(None) is EMPTY_METADATA
    assert Metadata.coerce({}) is EMPTY_METADATA
    assert both == Metadata([("a", "1"), ("b", "2")]) and hash(both) == hash(Metadata(both))
