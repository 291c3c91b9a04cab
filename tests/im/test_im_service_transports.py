"""The IM API beyond WebSocket pushes: the Subscribe event stream, and gRPC (no pushes)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from flare.im.v1 import content_pb2, events_pb2, im_pb2
from flare.im.v1.im_flare import ImServiceClient

from flare_runtime.auth import TokenAuth
from flare_runtime.client import Channel, connect
from flare_runtime.context import Principal
from flare_runtime.im.core import ImCore, ImLimits
from flare_runtime.im.service import SESSION_HEADER, ImService
from flare_runtime.im.storage import KeyRing, SqliteStorage
from flare_runtime.server import Server

TIMEOUT = 10.0


def send_request(conversation: str, client_id: str, body: str) -> im_pb2.SendRequest:
    return im_pb2.SendRequest(
        conversation_id=conversation,
        client_message_id=client_id,
        content=content_pb2.Content(text=content_pb2.TextContent(text=body)),
    )


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    core = ImCore(SqliteStorage(tmp_path / "im.db", KeyRing.generate()), limits=ImLimits())
    await core.start()
    tokens = {"token-alice": Principal("alice"), "token-bob": Principal("bob")}
    running = Server([ImService(core)], auth=TokenAuth(tokens), push_tables=[ImService.PUSH_TYPES])
    await running.start(websocket="127.0.0.1:0", grpc="127.0.0.1:0")
    yield running
    await running.shutdown(grace=1.0)
    await core.close()


async def next_message(events: AsyncIterator[events_pb2.Event]) -> events_pb2.Message:
    async with asyncio.timeout(TIMEOUT):
        async for event in events:
            if event.WhichOneof("event") == "message_received":
                return event.message_received.message
    raise AssertionError("the event stream ended")


async def open_channel(url: str, token: str) -> Channel:
    return await connect(url, token=token, push_tables=[ImService.PUSH_TYPES])


@pytest.mark.parametrize("transport", ["websocket", "grpc"])
async def test_subscribe_stream_carries_the_session_events(server: Server, transport: str) -> None:
    """Alice reads her events from Subscribe (on gRPC the only way); Bob uses WebSocket pushes."""
    scheme = "ws" if transport == "websocket" else "grpc"
    alice_channel = await open_channel(
        f"{scheme}://127.0.0.1:{server.port(transport)}", "token-alice"
    )
    bob_channel = await open_channel(f"ws://127.0.0.1:{server.port('websocket')}", "token-bob")
    alice, bob = ImServiceClient(alice_channel), ImServiceClient(bob_channel)
    try:
        login = await alice.login(im_pb2.LoginRequest(device_id="laptop"), timeout=TIMEOUT)
        # On gRPC every call names the session; on WebSocket the connection does.
        session = [(SESSION_HEADER, login.session_id)] if transport == "grpc" else None
        await bob.login(im_pb2.LoginRequest(device_id="phone"), timeout=TIMEOUT)
        direct = await bob.open_direct(im_pb2.OpenDirectRequest(peer_user_id="alice"))
        stream = alice.subscribe(im_pb2.SubscribeRequest(), metadata=session)
        events = aiter(stream)
        # The stream is live once a first event arrives: typing is cheap and not stored.
        async with asyncio.timeout(TIMEOUT):
            while True:
                await bob.set_typing(
                    im_pb2.SetTypingRequest(conversation_id=direct.conversation_id, typing=True)
                )
                event = await anext(events)
                if event.WhichOneof("event") == "typing_changed":
                    break
        reply = await bob.send(send_request(direct.conversation_id, "b1", "hello alice"))
        received = await next_message(events)
        assert (received.seq, received.content.text.text) == (reply.seq, "hello alice")

        mine = await alice.send(
            send_request(direct.conversation_id, "a1", "hi bob"), metadata=session
        )
        assert mine.seq == 2
        assert (await next_message(events)).seq == 2  # her own devices see it too
        history = await alice.get_history(
            im_pb2.GetHistoryRequest(conversation_id=direct.conversation_id), metadata=session
        )
        assert [m.content.text.text for m in history.messages] == ["hello alice", "hi bob"]
        stream.cancel()
    finally:
        await alice_channel.close()
        await bob_channel.close()
