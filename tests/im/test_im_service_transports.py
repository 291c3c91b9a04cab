"""The IM API on every transport: Subscribe streams (WebSocket, gRPC, QUIC), QUIC pushes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from flare.im.v1 import content_pb2, events_pb2, im_pb2
from flare.im.v1.im_flare import ImServiceClient

from flare_runtime.auth import Principal, TokenAuth
from flare_runtime.client import Channel, connect
from flare_runtime.im.core import ImCore, ImLimits
from flare_runtime.im.service import SESSION_HEADER, ImService
from flare_runtime.im.storage import KeyRing, SqliteStorage
from flare_runtime.server import Server, TLSFiles
from flare_runtime.testing.timing import UNIT
from flare_runtime.transports.quic_certs import write_dev_certificate

TIMEOUT = 10 * UNIT


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
    certificate = write_dev_certificate(tmp_path)
    await running.start(websocket="127.0.0.1:0", grpc="127.0.0.1:0")
    # QUIC always has TLS; given to the first start, it would make ws:// wss:// too.
    await running.start(
        quic="127.0.0.1:0",
        tls=TLSFiles(str(certificate.certificate), str(certificate.private_key)),
    )
    running.ca_file = str(certificate.certificate)  # type: ignore[attr-defined]
    yield running
    await running.shutdown(grace=1.0)
    await core.close()


async def _drain(queue: asyncio.Queue[events_pb2.Event]) -> AsyncIterator[events_pb2.Event]:
    while True:
        yield await queue.get()


async def next_message(events: AsyncIterator[events_pb2.Event]) -> events_pb2.Message:
    async with asyncio.timeout(TIMEOUT):
        async for event in events:
            if event.WhichOneof("event") == "message_received":
                return event.message_received.message
    raise AssertionError("the event stream ended")


SCHEMES = {"websocket": "ws", "grpc": "grpc", "quic": "quic"}


async def open_channel(server: Server, transport: str, token: str) -> Channel:
    url = f"{SCHEMES[transport]}://127.0.0.1:{server.port(transport)}"
    extra = {"ca_file": server.ca_file} if transport == "quic" else {}  # type: ignore[attr-defined]
    return await connect(url, token=token, push_tables=[ImService.PUSH_TYPES], **extra)


@pytest.mark.parametrize("transport", ["websocket", "grpc", "quic"])
async def test_subscribe_stream_carries_the_session_events(server: Server, transport: str) -> None:
    """Alice reads her events from Subscribe (on gRPC the only way); Bob uses WebSocket pushes."""
    alice_channel = await open_channel(server, transport, "token-alice")
    bob_channel = await open_channel(server, "websocket", "token-bob")
    alice, bob = ImServiceClient(alice_channel), ImServiceClient(bob_channel)
    try:
        login = await alice.login(im_pb2.LoginRequest(device_id="laptop"), timeout=TIMEOUT)
        # On gRPC every call names the session; on WebSocket the connection does.
        session = [(SESSION_HEADER, login.session_id)] if transport == "grpc" else None
        await bob.login(im_pb2.LoginRequest(device_id="phone"), timeout=TIMEOUT)
        direct = await bob.open_direct(im_pb2.OpenDirectRequest(peer_user_id="alice"))
        stream = alice.subscribe(im_pb2.SubscribeRequest(), metadata=session)
        queue: asyncio.Queue[events_pb2.Event] = asyncio.Queue()

        async def consume() -> None:
            async for event in stream:
                queue.put_nowait(event)

        consumer = asyncio.ensure_future(consume())
        # The stream is live once an event arrives through it (until the server
        # runs Subscribe, events go out as pushes): typing is cheap and not stored.
        async with asyncio.timeout(TIMEOUT):
            while queue.empty():
                await bob.set_typing(
                    im_pb2.SetTypingRequest(conversation_id=direct.conversation_id, typing=True)
                )
                await asyncio.sleep(0.05)
        events = _drain(queue)
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
        consumer.cancel()
    finally:
        await alice_channel.close()
        await bob_channel.close()


async def test_quic_devices_get_pushes(server: Server) -> None:
    """On QUIC, as on WebSocket, a session's events are server pushes on its connection."""
    alice_channel = await open_channel(server, "quic", "token-alice")
    bob_channel = await open_channel(server, "quic", "token-bob")
    received: list[events_pb2.MessageReceived] = []
    arrived = asyncio.Event()

    def on_push(message: object) -> None:
        if isinstance(message, events_pb2.MessageReceived):
            received.append(message)
            arrived.set()

    alice_channel.on_push(on_push)
    alice, bob = ImServiceClient(alice_channel), ImServiceClient(bob_channel)
    try:
        await alice.login(im_pb2.LoginRequest(device_id="laptop"), timeout=TIMEOUT)
        await bob.login(im_pb2.LoginRequest(device_id="phone"), timeout=TIMEOUT)
        direct = await bob.open_direct(im_pb2.OpenDirectRequest(peer_user_id="alice"))
        for index in range(20):
            await bob.send(send_request(direct.conversation_id, f"b{index}", f"hello {index}"))
        async with asyncio.timeout(TIMEOUT):
            while len(received) < 20:
                arrived.clear()
                await arrived.wait()
        assert [event.message.seq for event in received] == list(range(1, 21))
        assert received[7].message.content.text.text == "hello 7"
    finally:
        await alice_channel.close()
        await bob_channel.close()
