"""Misuse of generated code that mypy must reject.

Checked by tests/typing/test_negative_typing.py, which runs mypy on this file
and expects exactly the errors marked on their lines by an ``E:`` comment
listing bracketed error codes (and no others). Excluded from the normal mypy and ruff runs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from examples.chat.v1 import chat_flare, chat_pb2
from flare_runtime.client import Channel
from flare_runtime.context import CallContext
from flare_runtime.routing import Route
from google.protobuf import empty_pb2, timestamp_pb2


class Complete(chat_flare.ChatServiceBase):
    async def send(self, request: chat_pb2.SendRequest, context: CallContext) -> chat_pb2.SendReply:
        return chat_pb2.SendReply()

    async def subscribe(
        self, request: chat_pb2.SubscribeRequest, context: CallContext
    ) -> AsyncIterator[chat_pb2.RoomEvent]:
        yield chat_pb2.RoomEvent()

    async def upload(
        self, requests: AsyncIterator[chat_pb2.UploadChunk], context: CallContext
    ) -> chat_pb2.UploadReply:
        return chat_pb2.UploadReply()

    async def chat(
        self, requests: AsyncIterator[chat_pb2.ChatMessage], context: CallContext
    ) -> AsyncIterator[chat_pb2.ChatMessage]:
        async for message in requests:
            yield message

    async def history(
        self, request: chat_pb2.HistoryRequest, context: CallContext
    ) -> chat_pb2.HistoryReply:
        return chat_pb2.HistoryReply()

    async def ping(self, request: empty_pb2.Empty, context: CallContext) -> timestamp_pb2.Timestamp:
        return timestamp_pb2.Timestamp()


class WrongRequestType(Complete):
    async def send(self, request: chat_pb2.HistoryRequest, context: CallContext) -> chat_pb2.SendReply:  # E: [override]
        return chat_pb2.SendReply()


class WrongReturnType(Complete):
    async def send(self, request: chat_pb2.SendRequest, context: CallContext) -> chat_pb2.HistoryReply:  # E: [override]
        return chat_pb2.HistoryReply()


class WrongReturnedValue(Complete):
    async def send(self, request: chat_pb2.SendRequest, context: CallContext) -> chat_pb2.SendReply:
        return chat_pb2.HistoryReply()  # E: [return-value]


class UnaryWhereStreamExpected(Complete):
    async def subscribe(  # E: [override]
        self, request: chat_pb2.SubscribeRequest, context: CallContext
    ) -> chat_pb2.RoomEvent:
        return chat_pb2.RoomEvent()


class MissingHandler(chat_flare.ChatServiceBase):
    async def send(self, request: chat_pb2.SendRequest, context: CallContext) -> chat_pb2.SendReply:
        return chat_pb2.SendReply()


def make_incomplete() -> chat_flare.ChatServiceBase:
    return MissingHandler()  # E: [abstract]


async def call(channel: Channel) -> None:
    client = chat_flare.ChatServiceClient(channel)
    await client.send(chat_pb2.HistoryRequest())  # E: [arg-type]
    await client.send(chat_pb2.SendRequest(), 2.0)  # E: [call-arg]
    reply: chat_pb2.HistoryReply = await client.send(chat_pb2.SendRequest())  # E: [assignment]
    await client.upload(chat_pb2.UploadChunk())  # E: [arg-type]
    stream = client.subscribe(chat_pb2.SubscribeRequest())
    async for event in stream:
        event.no_such_field  # E: [attr-defined]
    bidi = client.chat()
    await bidi.send(chat_pb2.SendRequest())  # E: [arg-type]
    route: Route[chat_pb2.HistoryRequest, chat_pb2.SendReply] = chat_flare.ChatServiceRoutes.SEND  # E: [assignment]
    chat_flare.ChatServiceRoutes.SEND = chat_flare.ChatServiceRoutes.PING  # E: [misc] [assignment]
