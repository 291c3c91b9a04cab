"""The example chat service's idempotent Send, called as the dispatcher calls it."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from examples.chat.v1 import chat_pb2
from examples.chat.v1.chat_flare import ChatServiceRoutes

from examples.chat.service import ChatService
from flare_runtime.auth import Principal
from flare_runtime.context import CallContext
from flare_runtime.errors import RpcError
from flare_runtime.routing import Transport
from flare_runtime.status import StatusCode


def as_user(user: str) -> CallContext:
    return CallContext(
        route=ChatServiceRoutes.SEND, transport=Transport.WEBSOCKET, principal=Principal(user)
    )


def send_request(client_id: str, text: str) -> chat_pb2.SendRequest:
    return chat_pb2.SendRequest(
        client_message_id=client_id, message=chat_pb2.ChatMessage(room="lobby", text=text)
    )


async def test_a_retry_returns_the_original_reply() -> None:
    service = ChatService()
    first = await service.send(send_request("c1", "hi"), as_user("alice"))
    retry = await service.send(send_request("c1", "hi"), as_user("alice"))
    assert retry == first
    assert [m.text for m in service.rooms["lobby"]] == ["hi"]


async def test_sends_without_an_id_or_from_another_author_are_new_messages() -> None:
    service = ChatService()
    first = await service.send(send_request("", "one"), as_user("alice"))
    second = await service.send(send_request("", "two"), as_user("alice"))
    bobs = await service.send(send_request("", "three"), as_user("bob"))
    same_id = await service.send(send_request("c1", "four"), as_user("alice"))
    other_author = await service.send(send_request("c1", "five"), as_user("bob"))
    assert [r.seq for r in (first, second, bobs, same_id, other_author)] == [1, 2, 3, 4, 5]
    assert [m.text for m in service.rooms["lobby"]] == ["one", "two", "three", "four", "five"]
    assert [m.author for m in service.rooms["lobby"]] == ["alice", "alice", "bob", "alice", "bob"]


async def test_an_ended_subscription_leaves_no_listener_entry() -> None:
    service = ChatService()
    context = as_user("alice")
    for room in ("a", "b"):
        stream = service.subscribe(chat_pb2.SubscribeRequest(room=room), context)
        waiting = asyncio.ensure_future(anext(stream))
        await asyncio.sleep(0)
        assert service.listeners[room]
        waiting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiting
    assert service.listeners == {}


async def test_a_subscriber_that_falls_behind_is_ended_not_buffered_for() -> None:
    service = ChatService(subscriber_backlog=3)
    stream = service.subscribe(chat_pb2.SubscribeRequest(room="lobby"), as_user("bob"))
    first = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0)
    for text in ("one", "two", "three", "four", "five"):
        await service.send(send_request("", text), as_user("alice"))
    assert (await first).posted.message.text == "one"
    # Four more arrived with room for three: the subscription ends, the server holds no more.
    assert service.listeners == {} or not service.listeners["lobby"]
    with pytest.raises(RpcError) as caught:
        await anext(stream)
    assert caught.value.code is StatusCode.RESOURCE_EXHAUSTED
