"""`WireEndpoint`, the half both sides share: timer, batched output, closing."""

from __future__ import annotations

import asyncio

from flare_runtime.metadata import EMPTY_METADATA
from flare_runtime.protocol.config import ProtocolConfig
from flare_runtime.routing import Transport
from flare_runtime.server import Server, ServerOptions
from flare_runtime.testing.frames import decode_frames
from flare_runtime.testing.memory import RecordingTransport, memory_pair
from flare_runtime.testing.service import (
    SERVICE,
    BytesValue,
    ConformanceService,
    Routes,
)
from flare_runtime.testing.timing import wait_until
from flare_runtime.wire.client import ClientEndpoint


async def test_keepalive_closes_a_stalled_peer_with_one_timer() -> None:
    fast = ProtocolConfig(keepalive_interval=0.05, keepalive_timeout=0.05)
    server = Server([(SERVICE, ConformanceService())], options=ServerOptions(protocol=fast))
    channel, endpoint, client_end = memory_pair(
        server, client_config=ProtocolConfig(keepalive_interval=None)
    )
    await channel.unary_unary(Routes.ECHO, BytesValue())
    timer = endpoint._timer
    assert timer is not None  # the connection's one timer
    client_end.pause_reading()  # the client stops answering PINGs
    # The endpoint closes first; the server lets it go when the transport
    # reports the loss, a loop turn or more later.
    await wait_until(lambda: endpoint.closed and not server.connections)
    client_end.resume_reading()
    await channel.close()


async def test_output_is_cut_at_frame_boundaries_to_the_transports_write_size() -> None:
    transport = RecordingTransport(max_write_size=100)
    config = ProtocolConfig(keepalive_interval=None)
    endpoint = ClientEndpoint(transport, config, Transport.WEBSOCKET, {}, 10)
    for size in (150, 20, 20, 20):
        endpoint.start_call(
            Routes.ECHO,
            metadata=EMPTY_METADATA,
            timeout=None,
            message=bytes(size),
            end_stream=True,
            info=None,
        )
    endpoint.flush()
    every, consumed = decode_frames(b"".join(transport.writes))
    assert consumed == sum(map(len, transport.writes))
    assert len(every) == 1 + 4 * 2  # HELLO, then CALL_START + MESSAGE per call
    assert len(transport.writes) > 2
    for write in transport.writes:
        frames, used = decode_frames(write)
        assert used == len(write)  # whole frames only
        assert len(write) <= 100 or len(frames) == 1


async def test_sends_are_written_once_flush_batch_of_them_are_queued() -> None:
    transport = RecordingTransport(max_write_size=1 << 20)
    config = ProtocolConfig(keepalive_interval=None, flush_batch=2)
    endpoint = ClientEndpoint(transport, config, Transport.WEBSOCKET, {}, 10)
    assert len(transport.writes) == 1  # the HELLO
    start = {"metadata": EMPTY_METADATA, "timeout": None, "end_stream": True, "info": None}
    endpoint.start_call(Routes.ECHO, message=b"1", **start)  # type: ignore[arg-type]
    assert len(transport.writes) == 2  # the only call leaves at once
    endpoint.start_call(Routes.ECHO, message=b"2", **start)  # type: ignore[arg-type]
    assert len(transport.writes) == 2  # batched for the end of this loop iteration
    endpoint.start_call(Routes.ECHO, message=b"3", **start)  # type: ignore[arg-type]
    assert len(transport.writes) == 3  # the batch is full: written at once
    await asyncio.sleep(0)
    assert len(transport.writes) == 3  # nothing left for the scheduled flush
