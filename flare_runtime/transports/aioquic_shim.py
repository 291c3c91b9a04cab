"""The aioquic internals the QUIC link reads, in one place (aioquic 1.x).

aioquic's `QuicConnection` has no public way to tell how much of a stream the
peer has not acknowledged yet, whether a stream holds data it could not send,
or which address the peer uses now (it changes on migration). The link needs
all three: the first is its write backpressure (`QuicLink.buffered_bytes`), the
second tells it to transmit after a datagram that may have opened the flow
control or congestion window, the third names the peer. Its `QuicServer` has no
public way to send a Retry to some clients only (admission under load) nor to
ask which connection ids it holds (routing between worker processes). Each is
read here and nowhere else; ``tests/runtime/transports/test_aioquic_shim.py`` pins them
against a real aioquic connection and fails loudly when a release changes them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from aioquic.asyncio.server import QuicServer
from aioquic.quic.connection import QuicConnection
from aioquic.quic.retry import QuicRetryTokenHandler


def stream_unacked_bytes(quic: QuicConnection, stream_id: int) -> int:
    """Bytes written to `stream_id` and not yet acknowledged by the peer (0: no stream).

    Reads ``QuicConnection._streams`` and the stream sender's ``_buffer``
    (aioquic drops acknowledged bytes from its front).
    """
    stream = quic._streams.get(stream_id)
    return 0 if stream is None else len(stream.sender._buffer)


def stream_has_unsent_data(quic: QuicConnection, stream_id: int, written: int) -> bool:
    """True when `stream_id` holds bytes aioquic has not sent (or must send again).

    `written` is how many bytes were written to the stream in all. Flow
    control, the congestion window, pacing and loss can hold data back; it
    leaves only on a transmit pass. Reads ``QuicConnection._streams``; the
    sender's `next_offset` is public.
    """
    stream = quic._streams.get(stream_id)
    return stream is not None and stream.sender.next_offset < written


def network_peer_address(quic: QuicConnection) -> tuple[str, int] | None:
    """The address the peer is reached at now (None before the first datagram).

    Reads ``QuicConnection._network_paths``: after a validated migration
    aioquic moves the new path to the front.
    """
    paths = quic._network_paths
    return cast("tuple[str, int]", tuple(paths[0].addr[:2])) if paths else None


def server_connections(server: QuicServer) -> Mapping[bytes, Any]:
    """The connection id -> connection protocol table of `server` (read, never written).

    Reads ``QuicServer._protocols``: every connection id a live connection answers to.
    """
    return cast("Mapping[bytes, Any]", server._protocols)


def set_server_retry(server: QuicServer, tokens: QuicRetryTokenHandler | None) -> None:
    """Make `server` answer the next new client with a stateless Retry (`tokens`), or not (None).

    Sets ``QuicServer._retry``, which aioquic reads for each Initial packet of a
    connection it does not know.
    """
    server._retry = tokens  # type: ignore[assignment]
