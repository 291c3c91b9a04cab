"""`ReconnectingChannel` against real servers: several URLs, a server that goes away, backoff."""

from __future__ import annotations

import asyncio
import socket

import pytest
from google.protobuf import wrappers_pb2

from flare_runtime.client import Channel
from flare_runtime.errors import ConfigurationError, ConnectionClosedError, RpcError
from flare_runtime.reconnect import Backoff, ChannelState, ReconnectingChannel, reconnecting
from flare_runtime.status import StatusCode
from flare_runtime.testing.harness import Rig, start_rig
from flare_runtime.testing.service import PUSH_TYPES, Routes

FAST = Backoff(initial_delay=0.02, max_delay=0.2)


def dead_url() -> str:
    """A WebSocket URL on a port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"ws://127.0.0.1:{port}"


async def echo(channel: Channel, text: bytes, timeout: float = 5.0) -> bytes:
    reply = await channel.unary_unary(
        Routes.ECHO, wrappers_pb2.BytesValue(value=text), timeout=timeout
    )
    return reply.value


def test_the_backoff_grows_to_its_maximum_and_jitter_only_shortens_it() -> None:
    backoff = Backoff(initial_delay=0.25, max_delay=10.0, multiplier=2.0, jitter=0.2)
    assert [backoff.delay(n, 0.0) for n in (1, 2, 3, 7, 20)] == [0.25, 0.5, 1.0, 10.0, 10.0]
    assert backoff.delay(1, 0.999) == pytest.approx(0.25 * 0.8, rel=1e-2)


def test_grpc_urls_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="WebSocket or QUIC"):
        ReconnectingChannel(["grpc://127.0.0.1:1"])
    with pytest.raises(ConfigurationError):
        ReconnectingChannel([])


async def test_it_reaches_a_live_server_among_dead_ones() -> None:
    rig = await start_rig("websocket")
    try:
        async with reconnecting(
            [dead_url(), rig.url, dead_url()], backoff=FAST, push_tables=[PUSH_TYPES]
        ) as channel:
            assert await echo(channel, b"hi") == b"hi"
            assert channel.url == rig.url and channel.state is ChannelState.READY
    finally:
        await rig.server.shutdown(grace=0.1)


async def test_no_server_within_the_open_timeout_is_a_clear_error() -> None:
    with pytest.raises(ConnectionClosedError, match="could be reached"):
        await reconnecting([dead_url(), dead_url()], backoff=FAST, open_timeout=0.5)


async def test_a_lost_server_is_replaced_by_another_and_the_session_resumed() -> None:
    """Pushes, calls and the resume hook carry on across the move to the other server."""
    rigs: list[Rig] = [await start_rig("websocket"), await start_rig("websocket")]
    resumed: list[bool] = []
    states: list[ChannelState] = []

    async def resume(channel: Channel, reconnected: bool) -> None:
        assert await echo(channel, b"resume") == b"resume"  # its calls go straight through
        resumed.append(reconnected)

    channel = await reconnecting(
        [rig.url for rig in rigs],
        backoff=FAST,
        resume=resume,
        on_state=lambda state, _: states.append(state),
        token=Rig.token(),
        push_tables=[PUSH_TYPES],
    )
    received: list[str] = []
    channel.on_push(lambda push: received.append(push.value))  # type: ignore[attr-defined]
    iterated: list[str] = []

    async def iterate() -> None:
        async for push in channel.pushes():
            iterated.append(push.value)  # type: ignore[attr-defined]

    reader = asyncio.ensure_future(iterate())
    try:
        first = channel.url
        await channel.unary_unary(Routes.PUSH_ME, wrappers_pb2.Int64Value(value=2), timeout=5)
        serving = next(rig for rig in rigs if rig.url == first)
        await serving.server.shutdown(grace=0.1)  # that server goes away
        # The call waits for the next connection, then runs there.
        assert await echo(channel, b"after", timeout=5) == b"after"
        assert channel.url != first and channel.connections == 2
        await channel.unary_unary(Routes.PUSH_ME, wrappers_pb2.Int64Value(value=1), timeout=5)
        async with asyncio.timeout(5):
            while len(iterated) < 3:
                await asyncio.sleep(0.01)
        assert received == iterated == ["push 0", "push 1", "push 0"]
        assert resumed == [False, True]
        assert ChannelState.RECONNECTING in states and states[-1] is ChannelState.READY
    finally:
        await channel.close()
        await reader  # the iterator ends with the channel
        for rig in rigs:
            await rig.server.shutdown(grace=0.1)
    assert channel.state is ChannelState.CLOSED


async def test_a_failing_resume_drops_that_connection_and_tries_again() -> None:
    rig = await start_rig("websocket")
    attempts = 0

    async def resume(channel: Channel, reconnected: bool) -> None:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise RuntimeError("not yet")

    try:
        async with reconnecting([rig.url], backoff=FAST, resume=resume) as channel:
            assert await echo(channel, b"x") == b"x"
            assert attempts == 3 and channel.connections == 1
    finally:
        await rig.server.shutdown(grace=0.1)


async def test_a_call_waits_no_longer_than_its_timeout_for_a_connection() -> None:
    rig = await start_rig("websocket")
    channel = await reconnecting([rig.url], backoff=Backoff(initial_delay=5, max_delay=5))
    try:
        await rig.server.shutdown(grace=0.1)
        async with asyncio.timeout(5):
            while channel.state is ChannelState.READY:
                await asyncio.sleep(0.01)
        with pytest.raises(RpcError) as failed:
            await echo(channel, b"x", timeout=0.2)
        assert failed.value.code is StatusCode.DEADLINE_EXCEEDED
    finally:
        await channel.close()
