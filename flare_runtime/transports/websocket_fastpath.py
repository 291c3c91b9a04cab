"""The WebSocket hot path, written by hand: whole binary frames in and out (RFC 6455 §5.2).

websockets' sans-I/O protocol objects parse and build every frame through a
general machine (a generator per parse, a `Frame` object, extensions, the
debug logger). For the frames a Flare connection carries almost exclusively
-- unfragmented binary frames, no extension -- that machinery costs several
times the frame itself (`bench.ws_bench`), so the adapter
(`flare_runtime.transports.websocket`) reads and writes them here:

* `write_binary_frame`: the header (and, from a client, the mask, RFC 6455
  §5.3) built directly, then one write to the asyncio transport.
* `read_binary_frames`: complete FIN+BINARY frames at the start of a chunk of
  input go straight to the endpoint; the rest of the chunk -- a control
  frame, a fragment, a partial or oversized frame, a masking error -- and
  everything after it goes through websockets, which also owns the handshake,
  PING/PONG and the close.

Both only run without extensions and in the OPEN state. Reading by hand is
correct only while websockets holds no bytes of a frame itself; finding that
out needs two fields of websockets' internal parser state. That read is the
one shim, `websockets_between_frames`, and
``tests/runtime/transports/test_websocket_fastpath.py`` fails loudly when a
websockets release changes those fields.
"""

from __future__ import annotations

import asyncio
import os
import struct
from typing import Protocol

from websockets.client import ClientProtocol
from websockets.protocol import State
from websockets.server import ServerProtocol

try:  # websockets' C implementation, as its own framing uses
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover -- a build without the C extension
    from websockets.utils import apply_mask

_FIN_BINARY = 0x82  # FIN + opcode 2 (RFC 6455 §5.2)
_HEADER_16 = struct.Struct("!BBH")
_HEADER_64 = struct.Struct("!BBQ")
_U16 = struct.Struct("!H")
_U64 = struct.Struct("!Q")


def websockets_between_frames(protocol: ServerProtocol | ClientProtocol) -> bool:
    """True when websockets' parser holds no input and waits for the start of a frame.

    The shim: it reads websockets' internals ``protocol.reader.buffer`` (input
    received and not yet parsed) and ``protocol.current_size`` (set while a
    message is being assembled), which websockets documents nowhere. The test
    of this module pins both against a real websockets protocol.
    """
    return not protocol.reader.buffer and protocol.current_size is None


class FrameReader(Protocol):
    """What `read_binary_frames` reads for: the adapter, with its endpoint and protocol."""

    @property
    def protocol(self) -> ServerProtocol | ClientProtocol: ...

    @property
    def endpoint(self) -> _Endpoint | None: ...


class _Endpoint(Protocol):
    def data_received(self, data: bytes) -> None: ...


def read_binary_frames(reader: FrameReader, data: bytes, masked: bool, max_size: int) -> bytes:
    """Hand the whole FIN+BINARY frames at the start of `data` to ``reader.endpoint``.

    `masked`: frames must be masked (we are the server) or must not be.
    Frames larger than `max_size` are left to websockets (it closes with
    1009). Stops early when the endpoint goes away or the protocol leaves the
    OPEN state (the endpoint closed). Returns what is left of `data`, for
    websockets. Call only when `websockets_between_frames` is True.
    """
    endpoint = reader.endpoint
    if endpoint is None:
        return data
    end = len(data)
    position = 0
    while end - position >= 2 and data[position] == _FIN_BINARY:
        second = data[position + 1]
        if bool(second & 0x80) is not masked:
            break  # a masking error: websockets reports it
        length = second & 0x7F
        header = 2
        if length == 126:
            if end - position < 4:
                break
            (length,) = _U16.unpack_from(data, position + 2)
            header = 4
        elif length == 127:
            if end - position < 10:
                break
            (length,) = _U64.unpack_from(data, position + 2)
            header = 10
        if length > max_size:
            break
        start = position + header + (4 if masked else 0)
        stop = start + length
        if stop > end:
            break  # a partial frame: websockets buffers it
        payload = data[start:stop]
        if masked:
            payload = apply_mask(payload, data[start - 4 : start])
        endpoint.data_received(payload)
        position = stop
        if reader.endpoint is None or reader.protocol.state is not State.OPEN:
            break
    return data[position:] if position else data


def write_binary_frame(transport: asyncio.Transport, data: bytes, masking: bool) -> None:
    """Write `data` as one final binary frame; `masking` from a client (RFC 6455 §5.3).

    Nothing else may be queued in websockets' own output at this point (the
    adapter flushes it after every input), so frame order is kept.
    """
    length = len(data)
    if masking:
        mask = _next_mask()
        transport.write(_header(length, 0x80) + mask + apply_mask(data, mask))
    elif length < 126:
        transport.write(bytes((_FIN_BINARY, length)) + data)
    else:
        transport.writelines((_header(length, 0), data))


def _header(length: int, mask_bit: int) -> bytes:
    """The header of one final binary frame of `length` bytes (RFC 6455 §5.2)."""
    if length < 126:
        return bytes((_FIN_BINARY, mask_bit | length))
    if length < 65536:
        return _HEADER_16.pack(_FIN_BINARY, mask_bit | 126, length)
    return _HEADER_64.pack(_FIN_BINARY, mask_bit | 127, length)


class MaskSource:
    """Masking keys from the OS's strong random source (RFC 6455 §5.3), fetched
    `POOL` bytes at a time rather than with one system call per frame."""

    POOL = 4096

    def __init__(self) -> None:
        self._pool = b""
        self._position = 0

    def __call__(self) -> bytes:
        position = self._position
        if position + 4 > len(self._pool):
            self._pool = os.urandom(self.POOL)
            position = 0
        self._position = position + 4
        return self._pool[position : position + 4]


_next_mask = MaskSource()
