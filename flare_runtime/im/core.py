"""The IM domain core: transport-free sessions, conversations, delivery and recovery.

`ImCore` holds every rule of docs/im.md and no I/O of its own: durable state
goes through a `Storage`, events leave through each session's `EventSink`.
The service layer (`flare_runtime.im.service`) maps RPCs onto these methods;
tests drive them directly, without sockets.

Failures are `RpcError`s with the codes the API documents (NOT_FOUND,
PERMISSION_DENIED, INVALID_ARGUMENT, RESOURCE_EXHAUSTED, FAILED_PRECONDITION).

Delivery and ordering, per conversation:

* `send` appends to storage (which assigns the gap-free seq, durably) and
  then hands the message to the conversation's sequencer, which pushes
  messages strictly in seq order even when concurrent appends finish out of
  order. The event is encoded once and the same bytes go to every device.
* A device whose sink holds more than `ImLimits.outbound_buffer_bytes` is
  disconnected as a slow consumer (SessionClosed, REASON_SLOW_CONSUMER)
  instead of slowing the room down. It recovers with `sync`.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import itertools
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from flare.im.v1 import events_pb2

from flare_runtime.errors import ConnectionClosedError, RpcError
from flare_runtime.im import events
from flare_runtime.im.sinks import EventSink
from flare_runtime.im.storage.base import (
    AppendResult,
    ConversationExistsError,
    ConversationKind,
    ConversationRecord,
    Membership,
    NewMessage,
    Receipt,
    Role,
    Storage,
    StoredMessage,
)
from flare_runtime.server_connection import PreparedPush
from flare_runtime.status import StatusCode

logger = logging.getLogger("flare_runtime.im")

_MAX_SEQ = 2**63 - 1


class DevicePolicy(enum.Enum):
    """How many sessions one user may hold at once. The newest login always wins.

    Under every policy a login from a device id that already has a session
    replaces that session.
    """

    ALLOW_ALL = "allow_all"
    ONE_PER_PLATFORM = "one_per_platform"
    ONE_IN_TOTAL = "one_in_total"


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
class ImLimits:
    """Limits the core enforces; each breach is a typed `RpcError`."""

    max_content_bytes: int = 64 * 1024
    """Largest serialized ``Content`` of one message (INVALID_ARGUMENT beyond)."""
    max_id_chars: int = 128
    """Longest device, client message, conversation or user id."""
    max_title_chars: int = 256
    max_member_limit: int = 10_000
    """Largest member limit a room may have (also the default)."""
    send_rate_per_second: float = 50.0
    """Sustained sends per session (RESOURCE_EXHAUSTED beyond the burst)."""
    send_burst: int = 100
    outbound_buffer_bytes: int = 4 * 1024 * 1024
    """A device's backlog beyond this disconnects it as a slow consumer."""
    sync_page_default: int = 100
    sync_page_max: int = 1000
    history_page_default: int = 50
    presence_grace_seconds: float = 5.0
    """A user whose last session closed stays online this long (absorbs reconnects)."""
    max_watched_users: int = 1000
    """Users one session may watch for presence."""
    max_sessions_per_user: int = 32
    """Under ALLOW_ALL, the oldest session is replaced beyond this."""


class CloseReason(enum.IntEnum):
    """Why the server ended a session; values equal ``SessionClosed.Reason``."""

    REPLACED = 1
    SLOW_CONSUMER = 2
    KICKED = 3
    SERVER_SHUTDOWN = 4


class Session:
    """One logged-in device of a user, bound to the sink its events go to."""

    __slots__ = (
        "_last_refill",
        "_tokens",
        "closed",
        "device_id",
        "platform",
        "session_id",
        "sink",
        "user_id",
        "watching",
    )

    def __init__(  # noqa: PLR0917 - built in one place, by ImCore.login
        self,
        session_id: str,
        user_id: str,
        device_id: str,
        platform: int,
        sink: EventSink,
        burst: int,
    ) -> None:
        self.session_id = session_id
        self.user_id = user_id
        self.device_id = device_id
        self.platform = platform
        self.sink = sink
        self.closed = False
        self.watching: set[str] = set()
        self._tokens = float(burst)
        self._last_refill = time.monotonic()

    def _take_send_token(self, rate: float, burst: int) -> bool:
        now = time.monotonic()
        self._tokens = min(float(burst), self._tokens + (now - self._last_refill) * rate)
        self._last_refill = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True

    def __repr__(self) -> str:
        return f"Session({self.session_id!r}, user={self.user_id!r}, device={self.device_id!r})"


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


@dataclass(frozen=True, slots=True)
class ConversationView:
    """A conversation with its members, as callers see it."""

    record: ConversationRecord
    members: dict[str, Role]


@dataclass(frozen=True, slots=True)
class ConversationSummary:
    """One of a user's conversations with the user's position in it."""

    membership: Membership
    unread_count: int


@dataclass(slots=True)
class _Room:
    """In-memory state of one conversation: the cached record, members, sequencer."""

    record: ConversationRecord
    members: dict[str, Role]
    next_delivery_seq: int
    last_seq: int
    pending: dict[int, StoredMessage] = field(default_factory=dict)
    appending: int = 0
    """Appends of this process under way (their seqs may still fill a gap)."""
    stored_since_retention: int = 0
    admin_lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def _check_id(value: str, what: str, limit: int) -> None:
    if not value or len(value) > limit:
        raise RpcError(StatusCode.INVALID_ARGUMENT, f"{what} must be 1-{limit} characters")


def _unread(last_seq: int, first_seq: int, read_seq: int) -> int:
    return max(0, last_seq - max(read_seq, first_seq - 1))


class ImCore:
    """Sessions, conversations, delivery, receipts, typing and presence over a `Storage`.

    Call `start` before use and `close` at the end. Every method runs on the
    event loop that called `start`; none blocks it (storage work is awaited).
    """

    def __init__(
        self,
        storage: Storage,
        *,
        policy: DevicePolicy = DevicePolicy.ALLOW_ALL,
        limits: ImLimits | None = None,
        retention: RetentionPolicy | None = None,
        wall_clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self.storage = storage
        self.policy = policy
        self.limits = limits or ImLimits()
        self.retention = retention
        self._retention_tasks: set[asyncio.Task[None]] = set()
        self._now_ms = wall_clock_ms
        self._sessions: dict[str, dict[str, Session]] = {}
        """user id -> session id -> session, in login order."""
        self._rooms: dict[str, _Room] = {}
        self._room_loads: dict[str, asyncio.Future[_Room | None]] = {}
        self._watchers: dict[str, set[Session]] = {}
        """user id -> sessions watching its presence."""
        self._online: set[str] = set()
        self._offline_timers: dict[str, asyncio.TimerHandle] = {}
        # Message and session ids: a random prefix per process plus a counter
        # (unique across restarts without a syscall per message).
        self._id_prefix = os.urandom(6).hex()
        self._ids = itertools.count(1)
        self._closing = False

    # -- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        """Open the storage."""
        await self.storage.open()

    async def close(self) -> None:
        """Close every session (REASON_SERVER_SHUTDOWN), then the storage."""
        self._closing = True
        for session in [s for sessions in self._sessions.values() for s in sessions.values()]:
            self._end_session(session, CloseReason.SERVER_SHUTDOWN, "server shutting down")
        for timer in self._offline_timers.values():
            timer.cancel()
        self._offline_timers.clear()
        if self._retention_tasks:
            await asyncio.gather(*self._retention_tasks, return_exceptions=True)
        await self.storage.close()

    def now_ms(self) -> int:
        """Server wall-clock time in milliseconds since the Unix epoch."""
        return self._now_ms()

    def _next_id(self) -> str:
        return f"{self._id_prefix}{next(self._ids):x}"

    # -- sessions ----------------------------------------------------------------

    def login(
        self, user_id: str, device_id: str, platform: int, sink: EventSink
    ) -> tuple[Session, list[Session]]:
        """Open a session for `device_id`; returns it and the sessions it replaced.

        Replaced sessions get ``SessionClosed(REASON_REPLACED)`` and their
        sinks are closed. The user is online from now on.
        """
        _check_id(user_id, "user id", self.limits.max_id_chars)
        _check_id(device_id, "device id", self.limits.max_id_chars)
        if self._closing:
            raise RpcError(StatusCode.UNAVAILABLE, "server shutting down")
        session = Session(
            self._next_id(), user_id, device_id, platform, sink, self.limits.send_burst
        )
        existing = list(self._sessions.get(user_id, {}).values())
        if self.policy is DevicePolicy.ONE_IN_TOTAL:
            replaced = existing
        elif self.policy is DevicePolicy.ONE_PER_PLATFORM:
            replaced = [s for s in existing if s.platform == platform or s.device_id == device_id]
        else:
            replaced = [s for s in existing if s.device_id == device_id]
            survivors = len(existing) - len(replaced)
            overflow = survivors + 1 - self.limits.max_sessions_per_user
            if overflow > 0:
                replaced += [s for s in existing if s not in replaced][:overflow]
        for old in replaced:
            self._end_session(
                old,
                CloseReason.REPLACED,
                f"replaced by a newer session of device {device_id!r}",
                replaced_by=session.session_id,
            )
        self._sessions.setdefault(user_id, {})[session.session_id] = session
        self._went_online(user_id)
        return session, replaced

    def logout(self, session: Session) -> None:
        """End `session` because its device left (logout or connection closed). Idempotent."""
        self._drop_session(session)

    def kick_session(self, session: Session, detail: str = "kicked by the server") -> None:
        """End `session` with ``SessionClosed(REASON_KICKED)`` and close its sink."""
        self._end_session(session, CloseReason.KICKED, detail)

    def sessions_of(self, user_id: str) -> list[Session]:
        """The user's open sessions, oldest first."""
        return list(self._sessions.get(user_id, {}).values())

    def is_online(self, user_id: str) -> bool:
        """True while the user has a session or is within the offline grace period."""
        return user_id in self._online

    def _end_session(
        self, session: Session, reason: CloseReason, detail: str, *, replaced_by: str = ""
    ) -> None:
        if session.closed:
            return
        if not session.sink.closed:
            notice = events_pb2.SessionClosed(
                reason=int(reason),  # type: ignore[arg-type]
                detail=detail,
                replaced_by_session_id=replaced_by,
            )
            # A slow consumer's backlog is already full: do not add to it.
            if reason is not CloseReason.SLOW_CONSUMER:
                with contextlib.suppress(ConnectionClosedError):
                    session.sink.offer(
                        PreparedPush(events.SESSION_CLOSED, notice.SerializeToString()),
                        sys.maxsize,
                    )
            session.sink.close(f"{reason.name.lower()}: {detail}")
        self._drop_session(session)

    def _drop_session(self, session: Session) -> None:
        if session.closed:
            return
        session.closed = True
        sessions = self._sessions.get(session.user_id)
        if sessions is not None:
            sessions.pop(session.session_id, None)
            if not sessions:
                del self._sessions[session.user_id]
                self._went_offline_later(session.user_id)
        for watched in session.watching:
            watchers = self._watchers.get(watched)
            if watchers is not None:
                watchers.discard(session)
                if not watchers:
                    del self._watchers[watched]
        session.watching.clear()

    def _deliver(
        self, sessions: Iterable[Session], event: PreparedPush, skip: Session | None = None
    ) -> list[Session] | None:
        """Offer `event` to each session's sink; returns those that must be cut off.

        The hot loop of every fan-out: one `offer` call per device, nothing
        else. Sessions are only ended afterwards (`_cut_off`), so the dicts
        being iterated never change under the loop.
        """
        limit = self.limits.outbound_buffer_bytes
        failed: list[Session] | None = None
        for session in sessions:
            if session is skip:
                continue
            try:
                if session.sink.offer(event, limit):
                    continue
            except ConnectionClosedError:
                pass
            if failed is None:
                failed = []
            failed.append(session)
        return failed

    def _cut_off(self, failed: list[Session]) -> None:
        for session in failed:
            if session.sink.closed:
                self._drop_session(session)
            else:
                self._end_session(
                    session,
                    CloseReason.SLOW_CONSUMER,
                    f"more than {self.limits.outbound_buffer_bytes} bytes of events not read",
                )

    def _push_to_users(
        self, user_ids: Iterable[str], type_id: int, payload: bytes, *, skip: Session | None = None
    ) -> None:
        """Push one event to every device of `user_ids`, serialized once for all of them."""
        event = PreparedPush(type_id, payload)
        sessions = self._sessions
        failed: list[Session] = []
        for user_id in user_ids:
            devices = sessions.get(user_id)
            if devices is not None:
                cut = self._deliver(devices.values(), event, skip)
                if cut:
                    failed += cut
        if failed:
            self._cut_off(failed)

    # -- presence ----------------------------------------------------------------

    def _went_online(self, user_id: str) -> None:
        timer = self._offline_timers.pop(user_id, None)
        if timer is not None:
            timer.cancel()  # reconnected within the grace period: no flap
            return
        if user_id not in self._online:
            self._online.add(user_id)
            self._presence_changed(user_id, online=True)

    def _went_offline_later(self, user_id: str) -> None:
        if self._closing or user_id not in self._online:
            return
        loop = asyncio.get_running_loop()
        self._offline_timers[user_id] = loop.call_later(
            self.limits.presence_grace_seconds, self._grace_expired, user_id
        )

    def _grace_expired(self, user_id: str) -> None:
        self._offline_timers.pop(user_id, None)
        if user_id in self._sessions:
            return
        self._online.discard(user_id)
        self._presence_changed(user_id, online=False)

    def _presence_changed(self, user_id: str, *, online: bool) -> None:
        watchers = self._watchers.get(user_id)
        if not watchers:
            return
        event = PreparedPush(
            events.PRESENCE_CHANGED,
            events_pb2.PresenceChanged(
                user_id=user_id, online=online, changed_at_ms=self._now_ms()
            ).SerializeToString(),
        )
        failed = self._deliver(watchers, event)
        if failed:
            self._cut_off(failed)

    def watch_presence(
        self, session: Session, user_ids: Sequence[str], *, unwatch: bool = False
    ) -> dict[str, bool]:
        """Start (or stop) pushing `user_ids`' presence changes to `session`.

        Returns the users' presence now. RESOURCE_EXHAUSTED beyond
        `ImLimits.max_watched_users`.
        """
        self._require_open(session)
        for user_id in user_ids:
            _check_id(user_id, "user id", self.limits.max_id_chars)
        if unwatch:
            for user_id in user_ids:
                session.watching.discard(user_id)
                watchers = self._watchers.get(user_id)
                if watchers is not None:
                    watchers.discard(session)
                    if not watchers:
                        del self._watchers[user_id]
        else:
            if len(session.watching | set(user_ids)) > self.limits.max_watched_users:
                raise RpcError(
                    StatusCode.RESOURCE_EXHAUSTED,
                    f"a session may watch at most {self.limits.max_watched_users} users",
                )
            for user_id in user_ids:
                session.watching.add(user_id)
                self._watchers.setdefault(user_id, set()).add(session)
        return {user_id: user_id in self._online for user_id in user_ids}

    async def online_members(self, session: Session, conversation_id: str) -> list[str]:
        """Members of the conversation online now, sorted."""
        room = await self._member_room(session, conversation_id)
        return sorted(user for user in room.members if user in self._online)

    # -- conversations -----------------------------------------------------------

    def _require_open(self, session: Session) -> None:
        if session.closed:
            raise RpcError(StatusCode.FAILED_PRECONDITION, "the session is closed")

    async def _room(self, conversation_id: str) -> _Room | None:
        room = self._rooms.get(conversation_id)
        if room is not None:
            return room
        _check_id(conversation_id, "conversation id", self.limits.max_id_chars)
        loading = self._room_loads.get(conversation_id)
        while loading is not None:
            # Wait without inheriting the loader's cancellation (only our own).
            await asyncio.wait((loading,))
            if not loading.cancelled():
                return loading.result()  # re-raises the load's error
            # The loading call was cancelled: load again (or wait for whoever does).
            room = self._rooms.get(conversation_id)
            if room is not None:
                return room
            loading = self._room_loads.get(conversation_id)
        future: asyncio.Future[_Room | None] = asyncio.get_running_loop().create_future()
        self._room_loads[conversation_id] = future
        try:
            record = await self.storage.get_conversation(conversation_id)
            loaded = None
            if record is not None:
                members = await self.storage.members(conversation_id)
                loaded = _Room(record, members, record.last_seq + 1, record.last_seq)
                self._rooms[conversation_id] = loaded
            future.set_result(loaded)
            return loaded
        except asyncio.CancelledError:
            future.cancel()  # waiters load again rather than fail with our cancellation
            raise
        except BaseException as error:
            future.set_exception(error)
            future.exception()  # retrieved: waiters (if any) re-raise it
            raise
        finally:
            del self._room_loads[conversation_id]

    async def _existing_room(self, conversation_id: str) -> _Room:
        """The conversation's room; NOT_FOUND when there is no such conversation."""
        room = await self._room(conversation_id)
        if room is None:
            raise RpcError(StatusCode.NOT_FOUND, f"unknown conversation {conversation_id!r}")
        return room

    async def _member_room(self, session: Session, conversation_id: str) -> _Room:
        self._require_open(session)
        room = await self._existing_room(conversation_id)
        if session.user_id not in room.members:
            raise RpcError(
                StatusCode.PERMISSION_DENIED, f"not a member of conversation {conversation_id!r}"
            )
        return room

    def _new_record(
        self,
        conversation_id: str,
        kind: ConversationKind,
        title: str,
        *,
        open: bool,
        member_limit: int,
    ) -> ConversationRecord:
        """A record for `Storage.create_conversation` (which starts the log itself)."""
        return ConversationRecord(
            conversation_id=conversation_id,
            kind=kind,
            title=title,
            open=open,
            member_limit=member_limit,
            epoch=1,
            first_seq=1,
            last_seq=0,
            created_at_ms=self._now_ms(),
        )

    def _view(self, room: _Room) -> ConversationView:
        record = room.record
        current = ConversationRecord(
            conversation_id=record.conversation_id,
            kind=record.kind,
            title=record.title,
            open=record.open,
            member_limit=record.member_limit,
            epoch=record.epoch,
            first_seq=record.first_seq,
            last_seq=room.last_seq,
            created_at_ms=record.created_at_ms,
        )
        return ConversationView(current, dict(room.members))

    def _membership_changed(
        self, room: _Room, user_id: str, change: int, role: Role | None, actor: str
    ) -> None:
        payload = events_pb2.MembershipChanged(
            conversation_id=room.record.conversation_id,
            user_id=user_id,
            change=change,  # type: ignore[arg-type]
            role=int(role) if role is not None else 0,  # type: ignore[arg-type]
            actor_user_id=actor,
        ).SerializeToString()
        recipients = set(room.members) | {user_id}
        self._push_to_users(recipients, events.MEMBERSHIP_CHANGED, payload)

    async def create_room(
        self,
        session: Session,
        title: str,
        member_user_ids: Sequence[str],
        *,
        open: bool = False,
        member_limit: int = 0,
    ) -> ConversationView:
        """Create a room owned by the session's user, with the given other members."""
        self._require_open(session)
        limit = member_limit or self.limits.max_member_limit
        if len(title) > self.limits.max_title_chars:
            raise RpcError(
                StatusCode.INVALID_ARGUMENT,
                f"title is longer than {self.limits.max_title_chars} characters",
            )
        if limit > self.limits.max_member_limit:
            raise RpcError(
                StatusCode.INVALID_ARGUMENT,
                f"member limit is at most {self.limits.max_member_limit}",
            )
        members = {user: Role.MEMBER for user in member_user_ids}
        for user in members:
            _check_id(user, "user id", self.limits.max_id_chars)
        members[session.user_id] = Role.OWNER
        if len(members) > limit:
            raise RpcError(StatusCode.RESOURCE_EXHAUSTED, f"a room of at most {limit} members")
        record = self._new_record(
            f"room:{self._next_id()}", ConversationKind.ROOM, title, open=open, member_limit=limit
        )
        stored = await self.storage.create_conversation(record, members)
        room = _Room(stored, dict(members), 1, 0)
        self._rooms[stored.conversation_id] = room
        for user, role in members.items():
            self._membership_changed(
                room, user, events_pb2.MembershipChanged.CHANGE_JOINED, role, session.user_id
            )
        return self._view(room)

    async def ensure_room(
        self, conversation_id: str, title: str, *, open: bool = True, owner: str = ""
    ) -> ConversationView:
        """Create a room with a fixed id unless it exists (an operator action, e.g. a lobby).

        `owner`, when given, becomes the first member (OWNER).
        """
        _check_id(conversation_id, "conversation id", self.limits.max_id_chars)
        room = await self._room(conversation_id)
        if room is None:
            record = self._new_record(
                conversation_id,
                ConversationKind.ROOM,
                title,
                open=open,
                member_limit=self.limits.max_member_limit,
            )
            with contextlib.suppress(ConversationExistsError):
                await self.storage.create_conversation(record, {owner: Role.OWNER} if owner else {})
            room = await self._room(conversation_id)
            assert room is not None
        return self._view(room)

    async def open_direct(self, session: Session, peer_user_id: str) -> ConversationView:
        """The one-to-one conversation of the session's user and `peer_user_id` (created once)."""
        self._require_open(session)
        _check_id(peer_user_id, "peer user id", self.limits.max_id_chars)
        if peer_user_id == session.user_id:
            raise RpcError(StatusCode.INVALID_ARGUMENT, "a direct conversation needs another user")
        first, second = sorted((session.user_id, peer_user_id))
        # Length-prefixed so that ids containing ':' cannot collide.
        conversation_id = f"dm:{len(first)}:{first}:{second}"
        room = await self._room(conversation_id)
        if room is None:
            record = self._new_record(
                conversation_id, ConversationKind.DIRECT, "", open=False, member_limit=2
            )
            members = {first: Role.MEMBER, second: Role.MEMBER}
            # Created concurrently: load it below.
            with contextlib.suppress(ConversationExistsError):
                await self.storage.create_conversation(record, members)
            room = await self._room(conversation_id)
            assert room is not None
        if session.user_id not in room.members:
            raise RpcError(StatusCode.PERMISSION_DENIED, "not a member of this conversation")
        return self._view(room)

    async def get_conversation(self, session: Session, conversation_id: str) -> ConversationView:
        """The conversation and its members (members only)."""
        return self._view(await self._member_room(session, conversation_id))

    async def list_conversations(self, session: Session) -> list[ConversationSummary]:
        """The session user's conversations with receipts and unread counts."""
        self._require_open(session)
        summaries = []
        for membership in await self.storage.memberships(session.user_id):
            room = self._rooms.get(membership.conversation.conversation_id)
            record = membership.conversation
            last_seq = room.last_seq if room is not None else record.last_seq
            unread = _unread(last_seq, record.first_seq, membership.receipt.read_seq)
            summaries.append(ConversationSummary(membership, unread))
        return summaries

    def _require_room_kind(self, room: _Room) -> None:
        if room.record.kind is not ConversationKind.ROOM:
            raise RpcError(
                StatusCode.FAILED_PRECONDITION, "membership of a direct conversation is fixed"
            )

    def _require_space(self, room: _Room, joining: int) -> None:
        if len(room.members) + joining > room.record.member_limit:
            raise RpcError(
                StatusCode.RESOURCE_EXHAUSTED,
                f"conversation is limited to {room.record.member_limit} members",
            )

    async def join_room(self, session: Session, conversation_id: str) -> ConversationView:
        """Join an open room (no-op for a member)."""
        self._require_open(session)
        room = await self._existing_room(conversation_id)
        self._require_room_kind(room)
        async with room.admin_lock:
            if session.user_id in room.members:
                return self._view(room)
            if not room.record.open:
                raise RpcError(StatusCode.PERMISSION_DENIED, "the room is not open: ask an admin")
            self._require_space(room, 1)
            await self.storage.put_members(conversation_id, {session.user_id: Role.MEMBER})
            room.members[session.user_id] = Role.MEMBER
            self._membership_changed(
                room,
                session.user_id,
                events_pb2.MembershipChanged.CHANGE_JOINED,
                Role.MEMBER,
                session.user_id,
            )
            return self._view(room)

    async def leave_room(self, session: Session, conversation_id: str) -> None:
        """Leave a room. The owner must hand ownership over first (FAILED_PRECONDITION)."""
        self._require_open(session)
        room = await self._existing_room(conversation_id)
        self._require_room_kind(room)
        async with room.admin_lock:
            role = room.members.get(session.user_id)
            if role is None:
                return
            if role is Role.OWNER:
                raise RpcError(
                    StatusCode.FAILED_PRECONDITION, "the owner cannot leave: transfer ownership"
                )
            await self.storage.remove_member(conversation_id, session.user_id)
            self._membership_changed(
                room,
                session.user_id,
                events_pb2.MembershipChanged.CHANGE_LEFT,
                None,
                session.user_id,
            )
            del room.members[session.user_id]

    async def add_members(
        self, session: Session, conversation_id: str, user_ids: Sequence[str]
    ) -> ConversationView:
        """Add users to a room (owner or admin); members already in are skipped."""
        room = await self._member_room(session, conversation_id)
        self._require_room_kind(room)
        for user in user_ids:
            _check_id(user, "user id", self.limits.max_id_chars)
        async with room.admin_lock:
            if room.members.get(session.user_id, Role.MEMBER) < Role.ADMIN:
                raise RpcError(StatusCode.PERMISSION_DENIED, "only an owner or admin adds members")
            new = {user: Role.MEMBER for user in user_ids if user not in room.members}
            if not new:
                return self._view(room)
            self._require_space(room, len(new))
            await self.storage.put_members(conversation_id, new)
            room.members.update(new)
            for user in new:
                self._membership_changed(
                    room,
                    user,
                    events_pb2.MembershipChanged.CHANGE_JOINED,
                    Role.MEMBER,
                    session.user_id,
                )
            return self._view(room)

    async def kick_member(self, session: Session, conversation_id: str, user_id: str) -> None:
        """Remove `user_id` from a room: the owner removes anyone, an admin removes members."""
        room = await self._member_room(session, conversation_id)
        self._require_room_kind(room)
        async with room.admin_lock:
            actor = room.members.get(session.user_id, Role.MEMBER)
            target = room.members.get(user_id)
            if target is None:
                raise RpcError(StatusCode.NOT_FOUND, f"{user_id!r} is not a member")
            if user_id == session.user_id:
                raise RpcError(StatusCode.INVALID_ARGUMENT, "use LeaveRoom to leave")
            if actor < Role.ADMIN or actor <= target:
                raise RpcError(
                    StatusCode.PERMISSION_DENIED,
                    f"a {actor.name.lower()} cannot remove a {target.name.lower()}",
                )
            await self.storage.remove_member(conversation_id, user_id)
            self._membership_changed(
                room, user_id, events_pb2.MembershipChanged.CHANGE_KICKED, None, session.user_id
            )
            del room.members[user_id]

    async def set_member_role(
        self, session: Session, conversation_id: str, user_id: str, role: Role
    ) -> ConversationView:
        """Change a member's role (owner only). Making someone OWNER makes the caller ADMIN."""
        room = await self._member_room(session, conversation_id)
        self._require_room_kind(room)
        async with room.admin_lock:
            if room.members.get(session.user_id) is not Role.OWNER:
                raise RpcError(StatusCode.PERMISSION_DENIED, "only the owner changes roles")
            if user_id not in room.members:
                raise RpcError(StatusCode.NOT_FOUND, f"{user_id!r} is not a member")
            if user_id == session.user_id:
                raise RpcError(StatusCode.INVALID_ARGUMENT, "transfer ownership to someone else")
            changes = {user_id: role}
            if role is Role.OWNER:
                changes[session.user_id] = Role.ADMIN
            await self.storage.put_members(conversation_id, changes)
            room.members.update(changes)
            for user, new_role in changes.items():
                self._membership_changed(
                    room,
                    user,
                    events_pb2.MembershipChanged.CHANGE_ROLE_CHANGED,
                    new_role,
                    session.user_id,
                )
            return self._view(room)

    # -- messages ----------------------------------------------------------------

    async def send(
        self, session: Session, conversation_id: str, client_message_id: str, content: bytes
    ) -> SendResult:
        """Store a message durably and push it to every online device of every member.

        `content` is a serialized ``flare.im.v1.Content``. A retry with the
        same `client_message_id` returns the original with ``duplicate=True``
        and pushes nothing. Raises RESOURCE_EXHAUSTED past the session's rate
        limit (retries count too: they cost a storage round trip).
        """
        self._require_open(session)
        limits = self.limits
        _check_id(client_message_id, "client message id", limits.max_id_chars)
        if not content:
            raise RpcError(StatusCode.INVALID_ARGUMENT, "message content is empty")
        if len(content) > limits.max_content_bytes:
            raise RpcError(
                StatusCode.INVALID_ARGUMENT,
                f"message content is {len(content)} bytes, the limit is {limits.max_content_bytes}",
            )
        if not session._take_send_token(limits.send_rate_per_second, limits.send_burst):
            raise RpcError(
                StatusCode.RESOURCE_EXHAUSTED,
                f"send rate limit: {limits.send_rate_per_second:g} messages/s per session",
            )
        room = await self._member_room(session, conversation_id)
        new = NewMessage(
            message_id=self._next_id(),
            sender_user_id=session.user_id,
            sender_device_id=session.device_id,
            client_message_id=client_message_id,
            sent_at_ms=self._now_ms(),
            body=content,
        )
        # The sequencer runs from the append's own completion callback, not in
        # this task: once under way, a message reaches it even when the caller
        # is cancelled (else every later message of the room would wait for
        # it), and no task is created per send.
        appended = self.storage.append_soon(room.record.conversation_id, new)
        room.appending += 1
        appended.add_done_callback(functools.partial(self._appended, room))
        result = await asyncio.shield(appended)
        return SendResult(result.message, result.duplicate)

    def _appended(self, room: _Room, appended: asyncio.Future[AppendResult]) -> None:
        room.appending -= 1
        if not appended.cancelled() and appended.exception() is None:
            result = appended.result()
            if not result.duplicate:
                self._sequence(room, result.message)
                self._count_for_retention(room)
                return
        # A failed append or a retry took no seq: gaps left now are another writer's.
        if room.pending and room.appending == 0:
            self._sequence_skip_foreign_gaps(room)

    def _sequence(self, room: _Room, message: StoredMessage) -> None:
        """Deliver messages in seq order: hold early arrivals until the gap before them closes."""
        if message.epoch != room.record.epoch or message.seq < room.next_delivery_seq:
            return  # appended before a history reset: superseded
        room.pending[message.seq] = message
        self._flush(room)
        if room.pending and room.appending == 0:
            self._sequence_skip_foreign_gaps(room)

    def _flush(self, room: _Room) -> None:
        while room.next_delivery_seq in room.pending:
            ready = room.pending.pop(room.next_delivery_seq)
            room.next_delivery_seq += 1
            room.last_seq = ready.seq
            self._push_to_users(
                room.members, events.MESSAGE_RECEIVED, events.message_received(ready)
            )

    def _sequence_skip_foreign_gaps(self, room: _Room) -> None:
        """No append of ours is under way, so the gaps left belong to another writer.

        (Another process on a shared PostgreSQL.) Its messages reach our
        devices through `sync`; live delivery goes on from the next seq we hold.
        """
        while room.pending:
            room.next_delivery_seq = min(room.pending)
            self._flush(room)

    async def sync(
        self, session: Session, cursors: Sequence[SyncCursor], limit: int = 0
    ) -> list[SyncResult]:
        """For each cursor, the messages after it (in order, at most `limit`) or a re-sync.

        A cursor needs a re-sync when its epoch is not the conversation's
        (history was reset), when messages after it were trimmed, or when it
        is ahead of the log. A cursor with epoch 0 means "nothing yet" and
        starts at the oldest retained message.
        """
        self._require_open(session)
        page = self._page(limit, self.limits.sync_page_default, self.limits.sync_page_max)
        results = []
        for cursor in cursors:
            room = await self._member_room(session, cursor.conversation_id)
            record = room.record
            first_seq = record.first_seq
            last_seq = max(room.last_seq, max(room.pending, default=0))
            reason = ""
            if cursor.epoch not in (0, record.epoch):
                reason = f"epoch changed from {cursor.epoch} to {record.epoch}: history was reset"
            elif cursor.epoch == 0 and cursor.last_seq != 0:
                reason = "a cursor without an epoch must have last_seq 0"
            elif cursor.last_seq > last_seq:
                reason = f"cursor seq {cursor.last_seq} is ahead of the log ({last_seq})"
            if reason:
                results.append(
                    SyncResult(
                        record.conversation_id, record.epoch, first_seq, last_seq, [], False, reason
                    )
                )
                continue
            after = cursor.last_seq
            messages = await self.storage.read_after(record.conversation_id, after, page + 1)
            # Retention may have moved since the room was cached: trust the log.
            if messages and messages[0].seq != after + 1 and cursor.epoch != 0:
                reason = (
                    f"messages {after + 1}-{messages[0].seq - 1} were trimmed "
                    f"(oldest retained is {messages[0].seq})"
                )
            elif not messages and after < last_seq and cursor.epoch != 0:
                reason = f"messages after {after} were trimmed"
            if reason:
                results.append(
                    SyncResult(
                        record.conversation_id,
                        record.epoch,
                        messages[0].seq if messages else last_seq + 1,
                        last_seq,
                        [],
                        False,
                        reason,
                    )
                )
                continue
            has_more = len(messages) > page
            results.append(
                SyncResult(
                    record.conversation_id,
                    record.epoch,
                    first_seq,
                    last_seq,
                    messages[:page],
                    has_more,
                )
            )
        return results

    @staticmethod
    def _page(limit: int, default: int, maximum: int) -> int:
        if limit < 0:
            raise RpcError(StatusCode.INVALID_ARGUMENT, "limit must not be negative")
        if limit > maximum:
            raise RpcError(StatusCode.INVALID_ARGUMENT, f"limit is at most {maximum}")
        return limit or default

    async def history(
        self, session: Session, conversation_id: str, before_seq: int = 0, limit: int = 0
    ) -> tuple[list[StoredMessage], bool, ConversationView]:
        """Up to `limit` messages before `before_seq` (0: newest), oldest first, and has_more."""
        room = await self._member_room(session, conversation_id)
        page = self._page(limit, self.limits.history_page_default, self.limits.sync_page_max)
        # Storage seqs are signed 64-bit; a larger uint64 (e.g. UINT64_MAX as
        # "before everything") is beyond every message, like 0.
        before = before_seq if 0 < before_seq <= _MAX_SEQ else None
        messages = await self.storage.read_before(conversation_id, before, page + 1)
        has_more = len(messages) > page
        return messages[-page:] if has_more else messages, has_more, self._view(room)

    async def ack(
        self, session: Session, conversation_id: str, delivered_seq: int = 0, read_seq: int = 0
    ) -> tuple[Receipt, int]:
        """Move the user's receipt forward; returns it and the unread count.

        Positions beyond the newest message are clamped to it. Every member's
        devices get ``ReceiptUpdated`` (the user's own with the unread count).
        """
        room = await self._member_room(session, conversation_id)
        last_seq = room.last_seq
        receipt = await self.storage.update_receipt(
            conversation_id, session.user_id, min(delivered_seq, last_seq), min(read_seq, last_seq)
        )
        unread = _unread(room.last_seq, room.record.first_seq, receipt.read_seq)
        own = events_pb2.ReceiptUpdated(
            conversation_id=conversation_id,
            user_id=session.user_id,
            delivered_seq=receipt.delivered_seq,
            read_seq=receipt.read_seq,
            unread_count=unread,
        )
        self._push_to_users((session.user_id,), events.RECEIPT_UPDATED, own.SerializeToString())
        own.ClearField("unread_count")
        others = (user for user in room.members if user != session.user_id)
        self._push_to_users(others, events.RECEIPT_UPDATED, own.SerializeToString())
        return receipt, unread

    async def set_typing(self, session: Session, conversation_id: str, typing: bool) -> None:
        """Tell the other members' devices that this device is (not) typing. Nothing is stored."""
        room = await self._member_room(session, conversation_id)
        payload = events_pb2.TypingChanged(
            conversation_id=conversation_id,
            user_id=session.user_id,
            device_id=session.device_id,
            typing=typing,
        ).SerializeToString()
        self._push_to_users(room.members, events.TYPING_CHANGED, payload, skip=session)

    # -- retention ---------------------------------------------------------------

    def _count_for_retention(self, room: _Room) -> None:
        policy = self.retention
        if policy is None:
            return
        room.stored_since_retention += 1
        if room.stored_since_retention < policy.check_every or self._closing:
            return
        room.stored_since_retention = 0
        task = asyncio.ensure_future(self._retain(room.record.conversation_id, policy))
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
        room = await self._existing_room(conversation_id)
        older_than = self._now_ms() - max_age_ms if max_age_ms is not None else None
        record = await self.storage.trim(
            conversation_id, keep_last=keep_last, older_than_ms=older_than
        )
        room.record = record
        return record

    async def reset_history(self, conversation_id: str) -> ConversationRecord:
        """Drop a conversation's history and start a new epoch (clients must re-sync)."""
        room = await self._existing_room(conversation_id)
        record = await self.storage.reset_history(conversation_id)
        room.record = record
        room.pending.clear()
        room.next_delivery_seq = record.last_seq + 1
        room.last_seq = record.last_seq
        return record

    # -- introspection -----------------------------------------------------------

    def state_sizes(self) -> dict[str, int]:
        """Sizes of the per-user state (to check that closed sessions leave nothing behind)."""
        return {
            "users_with_sessions": len(self._sessions),
            "sessions": sum(len(s) for s in self._sessions.values()),
            "watched_users": len(self._watchers),
            "online_users": len(self._online),
            "offline_timers": len(self._offline_timers),
        }
