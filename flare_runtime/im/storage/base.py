"""The storage interface of the IM core, and the records it speaks in.

The interface is shaped by what the domain needs, not by SQL: conversations
with members and roles, an append-only per-conversation log with gap-free
sequence numbers and an epoch, idempotent appends keyed by the sender's client
message id, monotonic receipts, and retention. Bodies cross this interface as
plaintext bytes; a backend seals them at rest with its `KeyRing`.

Contract every backend keeps (the shared test suite checks it):

* `append` assigns ``seq = last_seq + 1`` atomically per conversation; seqs of
  one epoch have no gaps. It returns only once the message is durable (a
  crash after the return loses nothing).
* An append whose (conversation, sender, client message id) already exists
  stores nothing and returns the stored message with ``duplicate=True``.
* An append moves the sender's own receipt (delivered and read) to the new
  seq, in the same transaction: one's own messages are never unread.
* Receipts only move forward; ``delivered_seq >= read_seq`` always.
* `trim` drops the oldest messages and raises ``first_seq``; `reset_history`
  drops all of them, bumps the epoch and restarts seq at 1.
"""

from __future__ import annotations

import abc
import asyncio
import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

from flare_runtime.errors import FlareError


class StorageError(FlareError):
    """A storage backend failed, or found data it cannot read (e.g. an unknown key id)."""


class ConversationExistsError(StorageError):
    """`create_conversation` was asked for an id that is taken."""


class ConversationKind(enum.IntEnum):
    """Values equal ``flare.im.v1.ConversationKind``."""

    DIRECT = 1
    ROOM = 2


class Role(enum.IntEnum):
    """A member's role; values equal ``flare.im.v1.Role`` and order by power."""

    MEMBER = 1
    ADMIN = 2
    OWNER = 3


@dataclass(frozen=True, slots=True)
class ConversationRecord:
    """A conversation as stored."""

    conversation_id: str
    kind: ConversationKind
    title: str
    open: bool
    member_limit: int
    epoch: int
    """Starts at 1; bumped by `Storage.reset_history`."""
    first_seq: int
    """Oldest retained seq; ``last_seq + 1`` when no message is retained."""
    last_seq: int
    """Newest seq of the epoch; 0 before the first message."""
    created_at_ms: int


@dataclass(frozen=True, slots=True)
class NewMessage:
    """What `Storage.append` is given; the backend assigns seq and epoch."""

    message_id: str
    sender_user_id: str
    sender_device_id: str
    client_message_id: str
    sent_at_ms: int
    body: bytes

    def stored(self, conversation_id: str, seq: int, epoch: int) -> StoredMessage:
        """This message as stored at (conversation, epoch, seq)."""
        return StoredMessage(
            conversation_id=conversation_id,
            seq=seq,
            epoch=epoch,
            message_id=self.message_id,
            sender_user_id=self.sender_user_id,
            sender_device_id=self.sender_device_id,
            client_message_id=self.client_message_id,
            sent_at_ms=self.sent_at_ms,
            body=self.body,
        )


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """One message of a conversation's log, body decrypted."""

    conversation_id: str
    seq: int
    epoch: int
    message_id: str
    sender_user_id: str
    sender_device_id: str
    client_message_id: str
    sent_at_ms: int
    body: bytes


@dataclass(frozen=True, slots=True)
class AppendResult:
    """The stored message, and whether it was already stored before this append."""

    message: StoredMessage
    duplicate: bool


@dataclass(frozen=True, slots=True)
class Receipt:
    """How far one user has received and read one conversation."""

    conversation_id: str
    user_id: str
    delivered_seq: int = 0
    read_seq: int = 0


@dataclass(frozen=True, slots=True)
class Membership:
    """One of a user's conversations, with the user's role and receipt."""

    conversation: ConversationRecord
    role: Role
    receipt: Receipt


class Storage(abc.ABC):
    """Durable state of the IM core. All methods are coroutines safe to call concurrently.

    Call `open` before anything else and `close` at the end. Unknown
    conversations make reads return None/empty, and writes raise `StorageError`.
    """

    shared: ClassVar[bool] = False
    """True when several processes (cluster nodes, workers) may use the same data at once."""

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect and create the schema when missing (idempotent)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Flush and release resources; pending operations finish first."""

    @abc.abstractmethod
    async def create_conversation(
        self, record: ConversationRecord, members: Mapping[str, Role]
    ) -> ConversationRecord:
        """Store a new conversation with its first members.

        `record.epoch/first_seq/last_seq` are ignored (a new log starts at
        epoch 1, seq 0). Raises `ConversationExistsError` when the id is taken.
        """

    @abc.abstractmethod
    async def get_conversation(self, conversation_id: str) -> ConversationRecord | None:
        """The conversation, or None."""

    @abc.abstractmethod
    async def members(self, conversation_id: str) -> dict[str, Role]:
        """Members and roles (empty for an unknown conversation)."""

    @abc.abstractmethod
    async def put_members(self, conversation_id: str, members: Mapping[str, Role]) -> None:
        """Add members or change their roles."""

    @abc.abstractmethod
    async def remove_member(self, conversation_id: str, user_id: str) -> bool:
        """Remove a member (and its receipt); False when it was not a member."""

    @abc.abstractmethod
    async def memberships(
        self, user_id: str, *, after: str = "", limit: int | None = None
    ) -> list[Membership]:
        """The conversations `user_id` belongs to, ordered by conversation id.

        Only those whose id sorts after `after`; at most `limit` (None: all).
        """

    async def peers(self, user_id: str, user_ids: Sequence[str]) -> set[str]:
        """Those of `user_ids` who share at least one conversation with `user_id`.

        The default walks `user_id`'s memberships; backends answer it with one query.
        """
        wanted = set(user_ids)
        found: set[str] = set()
        for membership in await self.memberships(user_id):
            members = await self.members(membership.conversation.conversation_id)
            found |= wanted & members.keys()
            if found == wanted:
                break
        return found

    @abc.abstractmethod
    async def append(self, conversation_id: str, message: NewMessage) -> AppendResult:
        """Append durably with the next seq, or return the original on a retry."""

    def append_soon(
        self, conversation_id: str, message: NewMessage
    ) -> asyncio.Future[AppendResult]:
        """Start `append` now and return its future: the append completes even if
        nobody awaits the future (or the awaiting task is cancelled).

        The default runs `append` in a task; a backend that works outside the
        event loop returns its own future and saves that task.
        """
        return asyncio.ensure_future(self.append(conversation_id, message))

    @abc.abstractmethod
    async def read_after(
        self, conversation_id: str, after_seq: int, limit: int, *, max_bytes: int | None = None
    ) -> list[StoredMessage]:
        """Up to `limit` retained messages with seq > `after_seq`, oldest first.

        With `max_bytes`, the read also stops after the message whose body
        brings the bodies read to `max_bytes` or more (it returns at least one
        message when there is one), and holds no more than that in memory.
        """

    @abc.abstractmethod
    async def read_before(
        self,
        conversation_id: str,
        before_seq: int | None,
        limit: int,
        *,
        max_bytes: int | None = None,
    ) -> list[StoredMessage]:
        """Up to `limit` newest messages with seq < `before_seq` (None: any), oldest first.

        `max_bytes` bounds the bodies read as in `read_after`, counted from the newest.
        """

    @abc.abstractmethod
    async def update_receipt(
        self, conversation_id: str, user_id: str, delivered_seq: int, read_seq: int
    ) -> Receipt:
        """Move the receipt forward to at least these positions; returns the result.

        Positions never move back; ``delivered_seq`` is raised to ``read_seq``.
        """

    @abc.abstractmethod
    async def receipts(self, conversation_id: str, user_ids: Sequence[str]) -> dict[str, Receipt]:
        """Receipts of the given users (zero positions for users without one)."""

    @abc.abstractmethod
    async def trim(
        self,
        conversation_id: str,
        *,
        keep_last: int | None = None,
        older_than_ms: int | None = None,
    ) -> ConversationRecord:
        """Drop messages beyond the newest `keep_last` and those sent before `older_than_ms`."""

    @abc.abstractmethod
    async def reset_history(self, conversation_id: str) -> ConversationRecord:
        """Drop the whole log, start a new epoch, restart seq at 1."""
