"""The opening metadata block: round trip in any chunking; bad blocks are RemoteProtocolError."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flare_runtime.errors import RemoteProtocolError
from flare_runtime.metadata import Metadata
from flare_runtime.protocol.opening import (
    OPENING_LENGTH,
    OpeningBlockReader,
    OpeningBlockReceived,
    encode_opening_block,
)

METADATA = Metadata([("authorization", "Bearer t"), ("x-trace", "1"), ("x-id-bin", b"\x00\xff")])


def test_an_empty_block_is_five_bytes() -> None:
    assert encode_opening_block(Metadata()) == OPENING_LENGTH.pack(1) + b"\x00"
    received = OpeningBlockReader(64).receive_data(encode_opening_block(Metadata()))
    assert received == OpeningBlockReceived(Metadata(), b"")


@given(st.lists(st.integers(0, 200), max_size=6), st.binary(max_size=20))
def test_the_block_is_read_in_any_chunking_and_the_rest_is_kept(
    cuts: list[int], rest: bytes
) -> None:
    stream = encode_opening_block(METADATA) + rest
    reader = OpeningBlockReader(1024)
    positions = [*sorted(min(cut, len(stream)) for cut in cuts), len(stream)]
    start = 0
    for stop in positions:
        received = reader.receive_data(stream[start:stop])
        start = stop
        if received is not None:
            break
    assert received is not None
    assert received.metadata == METADATA
    # The bytes after the block in the chunk that completed it; later chunks
    # go straight to the endpoint.
    assert received.rest + stream[start:] == rest


def test_a_block_over_the_limit_is_refused_as_soon_as_its_length_arrives() -> None:
    reader = OpeningBlockReader(16)
    with pytest.raises(RemoteProtocolError) as caught:
        reader.receive_data(OPENING_LENGTH.pack(17))
    assert str(caught.value) == "opening metadata block too large: 17 bytes, at most 16"


@pytest.mark.parametrize(
    ("block", "reason"),
    [
        (b"\x05ab", "metadata entry count exceeds the block"),
        (b"\x01\x03a b\x01v", "invalid metadata key 'a b'"),
        (b"\x00\x00", "trailing bytes after the metadata block"),
    ],
    ids=["lying-count", "key-with-a-space", "trailing-bytes"],
)
def test_a_malformed_block_is_a_remote_protocol_error(block: bytes, reason: str) -> None:
    with pytest.raises(RemoteProtocolError) as caught:
        OpeningBlockReader(64).receive_data(OPENING_LENGTH.pack(len(block)) + block)
    assert str(caught.value).startswith("bad opening metadata block: ")
    assert reason in str(caught.value)
