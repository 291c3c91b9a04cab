"""The example chat service: the generated `ChatServiceBase`, implemented in memory.

Serve it with ``flare serve examples.chat.service:server --ws :8080`` (with
``generated/`` on ``PYTHONPATH``; add ``--quic :8443 --grpc :50051 --tls-cert
certs/dev-cert.pem --tls-key certs/dev-key.pem`` after ``flare cert dev -o certs``
for all three transports from one process) or run the scripted demo,
``python -m examples.chat.demo``.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import AsyncIterator

from examples.chat.v1 import chat_pb2
from examples.chat.v1.chat_flare import ChatServiceBase
from google.protobuf import empty_pb2, timestamp_pb2

from flare_runtime import CallContext, JWTAuth, RpcError, Server, StatusCode
from flare_runtime.server_connection import ServerConnection

DEMO_KEY = os.environ.get("FLARE_DEMO_JWT_KEY", "flare-demo-signing-key-change-me-0123456789")
"""HS256 key of the demo server (set FLARE_DEMO_JWT_KEY in anything real)."""


def _now() -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.GetCurrentTime()
    return stamp


class _Subscription:
    """The events one `Subscribe` call has not sent yet: at most `backlog` of them."""

    __slots__ = ("events", "fell_behind")

    def __init__(self, backlog: int) -> None:
        self.events: asyncio.Queue[chat_pb2.RoomEvent] = asyncio.Queue(maxsize=backlog)
        self.fell_behind = False


class ChatService(ChatServiceBase):
    """Rooms with gap-free sequence numbers, live subscriptions and pushes.

    A subscriber that falls `subscriber_backlog` events behind (it stopped
    reading) has its subscription ended with RESOURCE_EXHAUSTED: it resubscribes
    with ``after_seq`` and misses nothing, and the server never holds more than
    the backlog for it. Pushes to a client that stops reading are bounded by the
    runtime (`ServerOptions.max_unsent_output`).
    """

    def __init__(self, *, subscriber_backlog: int = 256) -> None:
        self.rooms: dict[str, list[chat_pb2.ChatMessage]] = {}
        self.sent: dict[tuple[str, str], chat_pb2.SendReply] = {}
        """Replies by (author, client_message_id), for idempotent retries."""
        self.subscriber_backlog = subscriber_backlog
        self.listeners: dict[str, set[_Subscription]] = {}
        self.connections: set[ServerConnection] = set()
        self._ids = itertools.count(1)

    def _remember(self, context: CallContext) -> None:
        connection = context.connection
        if connection is not None and connection not in self.connections:
            self.connections.add(connection)
            connection.add_close_callback(self.connections.discard)

    async def send(self, request: chat_pb2.SendRequest, context: CallContext) -> chat_pb2.SendReply:
        self._remember(context)
        author = context.principal.subject if context.principal else "anonymous"
        # Ids are the client's: one author's retry must not return another's
        # message, and a send without an id is never a retry.
        key = (author, request.client_message_id)
        if request.client_message_id and key in self.sent:
            return self.sent[key]  # idempotent retry
        if not request.message.room:
            raise RpcError(StatusCode.INVALID_ARGUMENT, "message.room is required")
        history = self.rooms.setdefault(request.message.room, [])
        message = chat_pb2.ChatMessage()
        message.CopyFrom(request.message)
        message.message_id = f"m{next(self._ids)}"
        message.author = author
        message.seq = len(history) + 1
        message.sent_at.CopyFrom(_now())
        history.append(message)
        reply = chat_pb2.SendReply(message_id=message.message_id, seq=message.seq)
        reply.accepted_at.CopyFrom(message.sent_at)
        if request.client_message_id:
            self.sent[key] = reply
        event = chat_pb2.RoomEvent(posted=chat_pb2.MessagePosted(message=message))
        listeners = self.listeners.get(message.room, set())
        for subscription in list(listeners):
            try:
                subscription.events.put_nowait(event)
            except asyncio.QueueFull:
                subscription.fell_behind = True
                listeners.discard(subscription)
        push = chat_pb2.MessagePosted(message=message)
        for connection in list(self.connections):
            if not connection.closed:
                connection.push(push)
        return reply

    async def subscribe(
        self, request: chat_pb2.SubscribeRequest, context: CallContext
    ) -> AsyncIterator[chat_pb2.RoomEvent]:
        self._remember(context)
        subscription = _Subscription(self.subscriber_backlog)
        listeners = self.listeners.setdefault(request.room, set())
        listeners.add(subscription)
        try:
            if request.after_seq:
                for message in self.rooms.get(request.room, [])[request.after_seq :]:
                    yield chat_pb2.RoomEvent(posted=chat_pb2.MessagePosted(message=message))
            while True:
                if subscription.fell_behind:
                    raise RpcError(
                        StatusCode.RESOURCE_EXHAUSTED,
                        "subscriber fell behind: subscribe again with after_seq",
                    )
                yield await subscription.events.get()
        finally:
            listeners.discard(subscription)
            if not listeners:  # rooms are named by clients: keep no empty entry
                self.listeners.pop(request.room, None)

    async def upload(
        self, requests: AsyncIterator[chat_pb2.UploadChunk], context: CallContext
    ) -> chat_pb2.UploadReply:
        size = 0
        upload_id = ""
        async for chunk in requests:
            upload_id = chunk.upload_id
            size += len(chunk.data)
        return chat_pb2.UploadReply(upload_id=upload_id, size=size)

    async def chat(
        self, requests: AsyncIterator[chat_pb2.ChatMessage], context: CallContext
    ) -> AsyncIterator[chat_pb2.ChatMessage]:
        async for message in requests:
            answer = chat_pb2.ChatMessage(room=message.room, author="echo-bot")
            answer.text = f"you said {message.text!r}"
            answer.sent_at.CopyFrom(_now())
            yield answer

    async def history(
        self, request: chat_pb2.HistoryRequest, context: CallContext
    ) -> chat_pb2.HistoryReply:
        messages = self.rooms.get(request.room, [])
        if request.before_seq:
            messages = messages[: request.before_seq - 1]
        limit = request.limit or 50
        return chat_pb2.HistoryReply(messages=messages[-limit:])

    async def ping(self, request: empty_pb2.Empty, context: CallContext) -> timestamp_pb2.Timestamp:
        return _now()


def make_server() -> Server:
    """The chat server: `ChatService` behind JWT auth (key `DEMO_KEY`)."""
    return Server([ChatService()], auth=JWTAuth(DEMO_KEY))


server = make_server()
"""For ``flare serve examples.chat.service:server``."""
