"""The conversation log: send, sync (recovery), history, receipts and retention.

`send` appends to storage (which assigns the gap-free seq, durably) and hands
the stored message to the conversation's sequencer (`Delivery`). `sync` and
`history` read the log back in pages bounded twice: by a message count
(``limit``) and by `ImLimits.max_reply_bytes` of message bodies for the whole
reply, so one request's memory does not grow with the number of cursors or
the size of the messages (``has_more`` says to ask again; a reply always
holds at least one message when one is due).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from flare.im.v1 import events_pb2

from flare_runtime.errors import RpcError
from flare_runtime.im import events
from flare_runtime.im.conversations import Conversations, ConversationView, Room, unread
from flare_runtime.im.delivery import Delivery, Fanout
from flare_runtime.im.limits import ImLimits, Rates, check_count, check_id, page_size
from flare_runtime.im.sessions import Session, require_open
from flare_runtime.im.storage.base import (
    AppendResult,
    ConversationRecord,
    NewMessage,
    Receipt,
    Storage,
    StoredMessage,
)
from flare_runtime.server_connection import PreparedPush
from flare_runtime.status import StatusCode

logger = logging.getLogger("flare_runtime.im")

_MAX_SEQ = 2**63 - 1


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """History kept per conversation; older messages are trimmed automatically.

    Applied to a conversation after every `check_every` messages stored in it
    (in the background, off the send path). Cursors behind the trimmed part
    get RESYNC_REQUIRED from `ImCore.sync`.
    """

    keep_last: int | None = None
    """Keep at most this many newest messages (None: no count limit)."""
    max_age_seconds: float | None = None
    """Drop messages older than this (None: no age limit)."""
    check_every: int = 1000


@dataclass(frozen=True, slots=True)
class SendResult:
    message: StoredMessage
    duplicate: bool


@dataclass(frozen=True, slots=True)
class SyncCursor:
    conversation_id: str
    epoch: int
    last_seq: int


@dataclass(frozen=True, slots=True)
class SyncResult:
    """The answer for one cursor: the next messages, or `resync_reason` set."""

    conversation_id: str
    epoch: int
    first_seq: int
    last_seq: int
    messages: list[StoredMessage]
    has_more: bool
    resync_reason: str = ""

    @property
    def resync_required(self) -> bool:
        return bool(self.resync_reason)


def _body_bytes(messages: Sequence[StoredMessage]) -> int:
    return sum(len(message.body) for message in messages)


class History:
    """Sending into a conversation's log and reading it back."""

    def __init__(  # noqa: PLR0917 - built in one place, by ImCore
        self,
        storage: Storage,
        conversations: Conversations,
        delivery: Delivery,
        limits: ImLimits,
        rates: Rates,
        retention: RetentionPolicy | None,
        now_ms: Callable[[], int],
    ) -> None:
        self._storage = storage
        self._conversations = conversations
        self._delivery = delivery
        self._limits = limits
        self._rates = rates
        self.retention = retention
        self._now_ms = now_ms
        self._retention_tasks: set[asyncio.Task[None]] = set()
        self.closing = False
        self.on_stored: Callable[[Mapping[str, object], StoredMessage], None] | None = None
        """Called with the conversation's live member table and each new message this
        process stored (offline push, `flare_runtime.im.push`); must return at once."""
        self.sent = 0
        """Messages stored by `send` (retries answered from the dedup window not counted)."""
        self.syncs = 0
        """`sync` calls answered."""
        # Message ids: a random prefix per process plus a counter (unique
        # across restarts without a syscall per message; not a secret).
        self._id_prefix = os.urandom(6).hex()
        self._ids = itertools.count(1)

    async def close(self) -> None:
        """Wait for background retention to finish."""
        self.closing = True
        if self._retention_tasks:
            await asyncio.gather(*self._retention_tasks, return_exceptions=True)

    # -- send ----------------------------------------------------------------------

    async def send(
        self, session: Session, conversation_id: str, client_message_id: str, content: bytes
    ) -> SendResult:
        """Store a message durably and push it to every online device of every member.

        `content` is a serialized ``flare.im.v1.Content``. A retry with the
        same `client_message_id` returns the original with ``duplicate=True``
        and pushes nothing. Raises RESOURCE_EXHAUSTED past the user's rate
        limit (retries count too: they cost a storage round trip).
        """
        require_open(session)
        limits = self._limits
        check_id(client_message_id, "client message id", limits.max_id_chars)
        if not content:
            raise RpcError(StatusCode.INVALID_ARGUMENT, "message content is empty")
        if len(content) > limits.max_content_bytes:
            raise RpcError(
                StatusCode.INVALID_ARGUMENT,
                f"message content is {len(content)} bytes, the limit is {limits.max_content_bytes}",
            )
        self._rates.send.take(session.user_id)
        room = await self._conversations.member_room(session, conversation_id)
        new = NewMessage(
            message_id=f"{self._id_prefix}{next(self._ids):x}",
            sender_user_id=session.user_id,
            sender_device_id=session.device_id,
            client_message_id=client_message_id,
            sent_at_ms=self._now_ms(),
            body=content,
        )
        # The sequencer runs from the append's own completion callback, not in
        # this task: once under way, a message reaches it even when the caller
        # is cancelled, and no task is created per send.
        appended = self._storage.append_soon(room.conversation_id, new)
        self._delivery.append_started(room)
        appended.add_done_callback(functools.partial(self._appended, room))
        result = await asyncio.shield(appended)
        if not result.duplicate:
            self.sent += 1
        return SendResult(result.message, result.duplicate)

    def _appended(self, room: Room, appended: asyncio.Future[AppendResult]) -> None:
        if self._delivery.appended(room, appended):
            if self.retention is not None:
                self._count_for_retention(room, self.retention)
            if self.on_stored is not None:
                self.on_stored(room.members, appended.result().message)

    # -- sync and history --------------------------------------------------------------

    async def sync(
        self, session: Session, cursors: Sequence[SyncCursor], limit: int = 0
    ) -> list[SyncResult]:
        """For each cursor, the messages after it (in order, at most `limit`) or a re-sync.

        A cursor needs a re-sync when its epoch is not the conversation's
        (history was reset), when messages after it were trimmed, or when it
        is ahead of the log. A cursor with epoch 0 means "nothing yet" and
        starts at the oldest retained message. Once the reply holds
        `ImLimits.max_reply_bytes` of messages, the remaining cursors get no
        messages and ``has_more`` where messages follow them.
        """
        require_open(session)
        limits = self._limits
        page = page_size(limit, limits.sync_page_default, limits.sync_page_max)
        check_count(len(cursors), "sync cursors", limits.max_sync_cursors)
        budget = limits.max_reply_bytes
        results = []
        for cursor in cursors:
            room = await self._conversations.member_room(session, cursor.conversation_id)
            result = await self._sync_one(room, cursor, page, budget)
            budget -= _body_bytes(result.messages)
            results.append(result)
        self.syncs += 1
        return results

    async def _sync_one(self, room: Room, cursor: SyncCursor, page: int, budget: int) -> SyncResult:
        record = room.record
        conversation_id, epoch, first_seq = record.conversation_id, record.epoch, record.first_seq
        last_seq = max(room.last_seq, max(room.pending, default=0))
        if cursor.epoch == epoch and cursor.last_seq > last_seq:
            # Another process stored messages this one has not seen yet (a cluster's
            # node behind its peers, or one that missed events): the log decides.
            stored = await self._storage.get_conversation(conversation_id)
            if stored is not None and stored.epoch == epoch:
                last_seq = max(last_seq, stored.last_seq)
        reason = ""
        if cursor.epoch not in (0, epoch):
            reason = f"epoch changed from {cursor.epoch} to {epoch}: history was reset"
        elif cursor.epoch == 0 and cursor.last_seq != 0:
            reason = "a cursor without an epoch must have last_seq 0"
        elif cursor.last_seq > last_seq:
            reason = f"cursor seq {cursor.last_seq} is ahead of the log ({last_seq})"
        if reason:
            return SyncResult(conversation_id, epoch, first_seq, last_seq, [], False, reason)
        after = cursor.last_seq
        if budget <= 0:
            # The reply is full: this cursor continues in the next Sync.
            has_more = after < last_seq
            return SyncResult(conversation_id, epoch, first_seq, last_seq, [], has_more)
        messages = await self._storage.read_after(
            conversation_id, after, page + 1, max_bytes=budget
        )
        # Retention may have moved since the room was cached: trust the log.
        if messages and messages[0].seq != after + 1 and cursor.epoch != 0:
            reason = (
                f"messages {after + 1}-{messages[0].seq - 1} were trimmed "
                f"(oldest retained is {messages[0].seq})"
            )
        elif not messages and after < last_seq and cursor.epoch != 0:
            reason = f"messages after {after} were trimmed"
        if reason:
            first = messages[0].seq if messages else last_seq + 1
            return SyncResult(conversation_id, epoch, first, last_seq, [], False, reason)
        has_more = len(messages) > page or (
            _body_bytes(messages) >= budget and bool(messages) and messages[-1].seq < last_seq
        )
        return SyncResult(conversation_id, epoch, first_seq, last_seq, messages[:page], has_more)

    async def history(
        self, session: Session, conversation_id: str, before_seq: int = 0, limit: int = 0
    ) -> tuple[list[StoredMessage], bool, ConversationView]:
        """Up to `limit` messages before `before_seq` (0: newest), oldest first, and has_more.

        The page also ends at `ImLimits.max_reply_bytes` of messages (at least one).
        """
        room = await self._conversations.member_room(session, conversation_id)
        limits = self._limits
        page = page_size(limit, limits.history_page_default, limits.sync_page_max)
        # Storage seqs are signed 64-bit; a larger uint64 (e.g. UINT64_MAX as
        # "before everything") is beyond every message, like 0.
        before = before_seq if 0 < before_seq <= _MAX_SEQ else None
        budget = limits.max_reply_bytes
        messages = await self._storage.read_before(
            conversation_id, before, page + 1, max_bytes=budget
        )
        # Oldest first: a page cut short by bytes keeps the newest messages.
        has_more = len(messages) > page or (
            _body_bytes(messages) >= budget
            and bool(messages)
            and messages[0].seq > room.record.first_seq
        )
        if len(messages) > page:
            messages = messages[-page:]
        return messages, has_more, self._conversations.view(room)

    # -- receipts ----------------------------------------------------------------------

    async def ack(
        self, session: Session, conversation_id: str, delivered_seq: int = 0, read_seq: int = 0
    ) -> tuple[Receipt, int]:
        """Move the user's receipt forward; returns it and the unread count.

        Positions beyond the newest message are clamped to it. Every member's
        devices get ``ReceiptUpdated`` (the user's own with the unread count).
        """
        self._rates.ack.take(session.user_id)
        room = await self._conversations.member_room(session, conversation_id)
        last_seq = room.last_seq
        receipt = await self._storage.update_receipt(
            conversation_id, session.user_id, min(delivered_seq, last_seq), min(read_seq, last_seq)
        )
        count = unread(room.last_seq, room.record.first_seq, receipt.read_seq)
        notice = events_pb2.ReceiptUpdated(
            conversation_id=conversation_id,
            user_id=session.user_id,
            delivered_seq=receipt.delivered_seq,
            read_seq=receipt.read_seq,
            unread_count=count,
        )
        own = PreparedPush(events.RECEIPT_UPDATED, notice.SerializeToString())
        notice.ClearField("unread_count")
        others = PreparedPush(events.RECEIPT_UPDATED, notice.SerializeToString())
        relay = self._delivery.relay
        if relay is not None:
            relay.user_event(session.user_id, own)
            relay.conversation_event(room, others, exclude=session.user_id)
        else:
            self._delivery.publish(room, Fanout(own, (session.user_id,)))
            self._delivery.publish(room, Fanout(others, room.members, exclude=session.user_id))
        return receipt, count

    # -- retention ---------------------------------------------------------------------

    def _count_for_retention(self, room: Room, policy: RetentionPolicy) -> None:
        room.stored_since_retention += 1
        if room.stored_since_retention < policy.check_every or self.closing:
            return
        room.stored_since_retention = 0
        task = asyncio.ensure_future(self._retain(room.conversation_id, policy))
        self._retention_tasks.add(task)
        task.add_done_callback(self._retention_tasks.discard)

    async def _retain(self, conversation_id: str, policy: RetentionPolicy) -> None:
        max_age_ms = None if policy.max_age_seconds is None else int(policy.max_age_seconds * 1000)
        try:
            await self.apply_retention(
                conversation_id, keep_last=policy.keep_last, max_age_ms=max_age_ms
            )
        except Exception:
            # Retention is retried at the next check; sending must not suffer.
            logger.exception("retention of %s failed", conversation_id)

    async def apply_retention(
        self, conversation_id: str, *, keep_last: int | None = None, max_age_ms: int | None = None
    ) -> ConversationRecord:
        """Trim a conversation's history by count and/or age (an operator action)."""
        room = await self._conversations.existing_room(conversation_id)
        older_than = self._now_ms() - max_age_ms if max_age_ms is not None else None
        record = await self._storage.trim(
            conversation_id, keep_last=keep_last, older_than_ms=older_than
        )
        room.record = record
        return record

    async def reset_history(self, conversation_id: str) -> ConversationRecord:
        """Drop a conversation's history and start a new epoch (clients must re-sync)."""
        room = await self._conversations.existing_room(conversation_id)
        record = await self._storage.reset_history(conversation_id)
        room.record = record
        self._delivery.reset(room, record.last_seq)
        if self._delivery.relay is not None:
            self._delivery.relay.history_reset(room)
        return record
