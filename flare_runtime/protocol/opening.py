"""The opening metadata block: connection credentials on a bare byte stream.

WebSocket carries a connection's opening metadata (``authorization``, the
``metadata=`` given to ``connect``) in its HTTP upgrade request. A transport
whose byte stream has no headers of its own -- QUIC's stream 0, a TCP or Unix
socket -- sends it first, before the first Flare frame (docs/wire-format.md
§1.1)::

    u32 big-endian length L, then L bytes: a metadata block (§5.2)

The client writes `encode_opening_block(metadata)` before its HELLO; the
server feeds what it receives to an `OpeningBlockReader` until the block is
complete, builds its endpoint with the metadata, and hands the endpoint the
bytes that followed the block.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from flare_runtime.errors import RemoteProtocolError
from flare_runtime.metadata import Metadata, MetadataLike
from flare_runtime.protocol.frames import decode_metadata, encode_metadata

OPENING_LENGTH = struct.Struct(">I")
"""The block's length prefix."""


def encode_opening_block(metadata: MetadataLike) -> bytes:
    """The opening block carrying `metadata` (raises `ValueError` for a bad key or value)."""
    block = encode_metadata(Metadata.coerce(metadata))
    return OPENING_LENGTH.pack(len(block)) + block


@dataclass(frozen=True, slots=True)
class OpeningBlockReceived:
    """The opening block is complete."""

    metadata: Metadata
    rest: bytes
    """The bytes after the block: the start of the Flare byte stream."""


class OpeningBlockReader:
    """Collects the opening block at the start of a byte stream, in any chunking."""

    def __init__(self, max_size: int) -> None:
        """Accept a block of at most `max_size` bytes (the server's ``max_metadata_size``)."""
        self._buffer = bytearray()
        self._max_size = max_size

    def receive_data(self, data: bytes) -> OpeningBlockReceived | None:
        """Feed received bytes; the block once it is complete, else None (feed more).

        Raises `RemoteProtocolError` for a block longer than `max_size` (as soon
        as its length is known) or a malformed one; the connection should then
        be closed. Call no more once the block has been returned.
        """
        buffer = self._buffer
        buffer += data
        if len(buffer) < OPENING_LENGTH.size:
            return None
        (size,) = OPENING_LENGTH.unpack_from(buffer)
        if size > self._max_size:
            raise RemoteProtocolError(
                f"opening metadata block too large: {size} bytes, at most {self._max_size}"
            )
        end = OPENING_LENGTH.size + size
        if len(buffer) < end:
            return None
        try:
            metadata = Metadata(decode_metadata(bytes(buffer), OPENING_LENGTH.size, end))
        # ValueError: a key the wire allows but metadata does not (a space, a colon).
        except (RemoteProtocolError, ValueError) as error:
            raise RemoteProtocolError(f"bad opening metadata block: {error}") from None
        rest = bytes(buffer[end:])
        buffer.clear()
        return OpeningBlockReceived(metadata, rest)
