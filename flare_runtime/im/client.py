"""`ImClient`: an IM device that stays in sync across reconnects, servers and gaps.

::

    client = ImClient(["ws://a:8080", "ws://b:8080"], token=jwt, device_id="phone",
                      on_message=show, on_event=handle)
    await client.start()                     # connected, logged in, synced
    reply = await client.send(conversation_id, content)
    ...
    await client.close()

It is the recovery recipe of docs/im.md ("Delivery guarantees": connect,
``Login``, then ``Sync`` from the last seq per conversation) made automatic,
over a `ReconnectingChannel` (WebSocket or QUIC):

* **Every (re)connect** - to whichever server answers - logs in again, lists
  the user's conversations (to learn of new ones) and syncs each from the last
  seq this client holds.
* **Live pushes** are taken in seq order: a message right after the last one
  is delivered; an older one is a duplicate and dropped; a newer one reveals
  a gap, and the conversation is synced.
* **``SyncRequired``** (the server may have missed live events: docs/cluster.md)
  syncs the conversations it names, or all of them. So does the user's own
  ``MembershipChanged(JOINED)`` for the conversation joined.
* **`send`** retries with the same ``client_message_id`` until it has a reply or
  its timeout passes: the server stores a message once, and a retry (on any
  server) returns the original reply.
* A session ended by a newer login of the same device or kicked
  (``SessionClosed`` REPLACED / KICKED) is not resumed: the client closes.

`on_message(message)` gets each message once per ``(conversation, epoch,
seq)``, in seq order per conversation, whether it came live or by ``Sync``;
`on_event(event)` gets every other push (an ``Event`` with one field set);
`on_resync(conversation_id, reason)` is told when the server could not continue
a conversation from this client's position (history reset or trimmed): the
client then starts over from the oldest message the server keeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from flare.im.v1 import content_pb2, events_flare, events_pb2, im_pb2
from flare.im.v1.im_flare import ImServiceClient
from google.protobuf.message import Message

from flare_runtime.client import Channel
from flare_runtime.errors import RpcError
from flare_runtime.reconnect import Backoff, ChannelState, ReconnectingChannel
from flare_runtime.status import StatusCode

logger = logging.getLogger("flare_runtime.im.client")

_RETRIED = (StatusCode.UNAVAILABLE, StatusCode.CANCELLED)
_ENDED = (events_pb2.SessionClosed.REASON_REPLACED, events_pb2.SessionClosed.REASON_KICKED)
_SYNC_PAGE = 1000


@dataclass(slots=True)
class Cursor:
    """This client's position in one conversation."""

    epoch: int = 0
    last_seq: int = 0


@dataclass(slots=True)
class ImClientStats:
    """What the client did (for tests and dashboards)."""

    live: int = 0
    """Messages delivered from live pushes."""
    synced: int = 0
    """Messages delivered from ``Sync`` replies."""
    duplicates: int = 0
    """Messages received again (live and synced, or twice) and dropped."""
    gaps: int = 0
    """Live messages that arrived after a missing one (a sync followed)."""
    sync_required: int = 0
    """``SyncRequired`` pushes received."""
    logins: int = 0
    syncs: int = 0
    resyncs: list[str] = field(default_factory=list)


class ImClient:
    """One device of one user (see the module docstring)."""

    def __init__(
        self,
        urls: str | Sequence[str],
        *,
        token: str,
        device_id: str,
        platform: int = 0,
        on_message: Callable[[events_pb2.Message], None] | None = None,
        on_event: Callable[[events_pb2.Event], None] | None = None,
        on_resync: Callable[[str, str], None] | None = None,
        backoff: Backoff | None = None,
        on_state: Callable[[ChannelState, BaseException | None], None] | None = None,
        open_timeout: float = 10.0,
        **connect_options: Any,
    ) -> None:
        self.device_id = device_id
        self.platform = platform
        self.cursors: dict[str, Cursor] = {}
        self.stats = ImClientStats()
        self.session_id = ""
        self.user_id = ""
        self.ended: events_pb2.SessionClosed | None = None
        """Set when the server ended the session for good (replaced or kicked)."""
        self._on_message = on_message
        self._on_event = on_event
        self._on_resync = on_resync
        self.channel = ReconnectingChannel(
            [urls] if isinstance(urls, str) else list(urls),
            backoff=backoff,
            resume=self._resume,
            on_state=on_state,
            open_timeout=open_timeout,
            token=token,
            push_tables=[events_flare.PUSH_TYPES],
            **connect_options,
        )
        self.im = ImServiceClient(self.channel)
        """The IM API over the reconnecting channel (calls wait for a connection)."""
        self._wanted: set[str] | None = set()
        """Conversations to sync (None: all, after listing them)."""
        self._syncing: asyncio.Task[None] | None = None
        self._closing: asyncio.Future[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self.channel.on_push(self._pushed)

    async def start(self) -> None:
        """Connect, log in and sync; returns once the first sync is done."""
        await self.channel.open()
        await self.synced()

    async def close(self) -> None:
        """Close the connection (the session ends with it) and stop."""
        syncing, self._syncing = self._syncing, None
        if syncing is not None:
            syncing.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await syncing
        await self.channel.close()

    async def synced(self) -> None:
        """Wait until connected, logged in, and no sync is due or under way."""
        await self.channel.ready()
        await self._idle.wait()

    # -- sending -------------------------------------------------------------------------

    async def send(
        self,
        conversation_id: str,
        content: content_pb2.Content,
        *,
        client_message_id: str = "",
        timeout: float = 10.0,
    ) -> im_pb2.SendReply:
        """Send once, whatever happens to connections: retried with the same client message id
        until a reply comes or `timeout` passes (then the last error is raised)."""
        request = im_pb2.SendRequest(
            conversation_id=conversation_id,
            client_message_id=client_message_id or secrets.token_hex(8),
            content=content,
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                return await self.im.send(request, timeout=max(0.001, deadline - loop.time()))
            except RpcError as error:
                if error.code not in _RETRIED or loop.time() >= deadline or self.ended:
                    raise
            await asyncio.sleep(0.01)

    # -- connections -----------------------------------------------------------------------

    async def _resume(self, channel: Channel, reconnected: bool) -> None:
        """Every connection: log in, learn of new conversations, sync them all."""
        if self.ended is not None:
            raise RpcError(StatusCode.FAILED_PRECONDITION, "the session was ended by the server")
        im = ImServiceClient(channel)
        login = await im.login(
            im_pb2.LoginRequest(device_id=self.device_id, platform=self.platform),  # type: ignore[arg-type]
            timeout=10.0,
        )
        self.session_id, self.user_id = login.session_id, login.user_id
        self.stats.logins += 1
        await self._list(im)
        await self._sync_now(im, list(self.cursors))

    async def _list(self, im: ImServiceClient) -> None:
        after = ""
        while True:
            page = await im.list_conversations(
                im_pb2.ListConversationsRequest(after_conversation_id=after), timeout=10.0
            )
            for summary in page.conversations:
                self.cursors.setdefault(summary.conversation_id, Cursor())
            if not page.has_more or not page.conversations:
                return
            after = page.conversations[-1].conversation_id

    # -- pushes --------------------------------------------------------------------------

    def _pushed(self, push: Message) -> None:
        if isinstance(push, events_pb2.MessageReceived):
            self._live(push.message)
            return
        if isinstance(push, events_pb2.SyncRequired):
            self.stats.sync_required += 1
            self._want(push.conversation_ids or None)
        elif isinstance(push, events_pb2.MembershipChanged):
            if (
                push.change == events_pb2.MembershipChanged.CHANGE_JOINED
                and push.user_id == self.user_id
            ):
                self.cursors.setdefault(push.conversation_id, Cursor())
                self._want([push.conversation_id])
        elif isinstance(push, events_pb2.SessionClosed) and push.reason in _ENDED:
            self.ended = push
            self._closing = asyncio.ensure_future(self.channel.close())
        if self._on_event is not None:
            event = events_pb2.Event()
            field_name = _EVENT_FIELDS.get(type(push))
            if field_name is not None:
                getattr(event, field_name).CopyFrom(push)
                self._on_event(event)

    def _live(self, message: events_pb2.Message) -> None:
        cursor = self.cursors.setdefault(message.conversation_id, Cursor())
        if message.epoch == cursor.epoch and message.seq <= cursor.last_seq:
            self.stats.duplicates += 1
        elif (message.epoch == cursor.epoch and message.seq == cursor.last_seq + 1) or (
            cursor.epoch == 0 and message.seq == 1  # the first message of a new conversation
        ):
            self.stats.live += 1
            self._deliver(cursor, message)
        else:  # a gap (or a new epoch): the log has what is missing
            self.stats.gaps += 1
            self._want([message.conversation_id])

    def _deliver(self, cursor: Cursor, message: events_pb2.Message) -> None:
        cursor.epoch, cursor.last_seq = message.epoch, message.seq
        if self._on_message is not None:
            self._on_message(message)

    # -- syncing -------------------------------------------------------------------------

    def _want(self, conversation_ids: Iterable[str] | None) -> None:
        if conversation_ids is None:
            self._wanted = None
        elif self._wanted is not None:
            self._wanted.update(conversation_ids)
        if self._syncing is None or self._syncing.done():
            self._idle.clear()
            self._syncing = asyncio.ensure_future(self._sync_loop())

    async def _sync_loop(self) -> None:
        try:
            while self._wanted is None or self._wanted:
                wanted, self._wanted = self._wanted, set()
                if self.channel.state is not ChannelState.READY:
                    await self.channel.ready()
                try:
                    if wanted is None:
                        await self._list(self.im)
                        wanted = set(self.cursors)
                    await self._sync_now(self.im, sorted(wanted))
                except RpcError as error:
                    if self.ended is not None:
                        return
                    # The connection went: its resume syncs everything again.
                    logger.info("sync failed (%s); the next connection syncs", error)
                    return
        finally:
            if self._wanted is not None and not self._wanted:
                self._idle.set()

    async def _sync_now(self, im: ImServiceClient, conversation_ids: Sequence[str]) -> None:
        """Sync the conversations until none has more; deliver what is new."""
        pending = list(conversation_ids)
        while pending:
            chunk, pending = pending[:_SYNC_PAGE], pending[_SYNC_PAGE:]
            request = im_pb2.SyncRequest(limit=_SYNC_PAGE)
            for conversation_id in chunk:
                cursor = self.cursors.setdefault(conversation_id, Cursor())
                request.cursors.add(
                    conversation_id=conversation_id, epoch=cursor.epoch, last_seq=cursor.last_seq
                )
            reply = await im.sync(request, timeout=30.0)
            self.stats.syncs += 1
            for result in reply.conversations:
                if self._synced(result):
                    pending.append(result.conversation_id)

    def _synced(self, result: im_pb2.ConversationSync) -> bool:
        """Apply one conversation's sync result; True when more is to be read."""
        cursor = self.cursors.setdefault(result.conversation_id, Cursor())
        if result.status == im_pb2.ConversationSync.STATUS_RESYNC_REQUIRED:
            self.stats.resyncs.append(result.conversation_id)
            cursor.epoch, cursor.last_seq = 0, 0
            if self._on_resync is not None:
                self._on_resync(result.conversation_id, result.resync_reason)
            return True
        for message in result.messages:
            if message.epoch == cursor.epoch and message.seq <= cursor.last_seq:
                self.stats.duplicates += 1
                continue
            self.stats.synced += 1
            self._deliver(cursor, message)
        if cursor.epoch == 0 and not result.messages:
            cursor.epoch = result.epoch  # nothing to read yet: live messages of this epoch follow
            cursor.last_seq = max(cursor.last_seq, result.first_seq - 1)
        return result.has_more


_EVENT_FIELDS: dict[type[Message], str] = {
    events_pb2.MessageReceived: "message_received",
    events_pb2.ReceiptUpdated: "receipt_updated",
    events_pb2.TypingChanged: "typing_changed",
    events_pb2.PresenceChanged: "presence_changed",
    events_pb2.MembershipChanged: "membership_changed",
    events_pb2.SessionClosed: "session_closed",
    events_pb2.SyncRequired: "sync_required",
}
