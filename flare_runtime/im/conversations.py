"""Conversations and membership: rooms and direct conversations, roles, the room cache.

`Conversations` loads each conversation once into a `Room` (its record, its
members and its delivery state), keeps a bounded number of them in memory,
and applies every membership rule of docs/im.md. Membership changes are
pushed to the members as ``MembershipChanged`` through the conversation's
outbox (`Delivery`), in order with its messages.

Privacy: a room's id is 128 random bits (``room:`` and 22 URL-safe
characters), so it cannot be guessed from another one. To anyone who is not
a member, a conversation that exists answers exactly as one that does not
(NOT_FOUND, "unknown conversation"), so no route is an existence oracle; only
an open room may be joined by id.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

from flare.im.v1 import events_pb2

from flare_runtime.errors import RpcError
from flare_runtime.im import events
from flare_runtime.im.delivery import Channel, Delivery, Fanout, MemberTable
from flare_runtime.im.limits import ImLimits, Rates, check_count, check_id, page_size
from flare_runtime.im.sessions import Session, require_open
from flare_runtime.im.storage.base import (
    ConversationExistsError,
    ConversationKind,
    ConversationRecord,
    Membership,
    Role,
    Storage,
)
from flare_runtime.server_connection import PreparedPush
from flare_runtime.status import StatusCode


class Room(Channel):
    """One conversation in memory: its cached record, its members and its delivery state."""

    __slots__ = ("admin_lock", "last_used", "record", "stored_since_retention")

    def __init__(self, record: ConversationRecord, members: dict[str, Role]) -> None:
        super().__init__(members, record.last_seq)
        self.record = record
        self.admin_lock = asyncio.Lock()
        """Held while membership changes (one change at a time per conversation)."""
        self.stored_since_retention = 0
        self.last_used = time.monotonic()
        """When a request last used the room (idle rooms may leave the cache)."""

    @property
    def epoch(self) -> int:
        return self.record.epoch

    @property
    def conversation_id(self) -> str:
        return self.record.conversation_id

    @property
    def quiet(self) -> bool:
        """Nothing in flight: no append, no held message, no fan-out, no membership change."""
        return not (
            self.appending
            or self.pending
            or self.queue
            or self.draining
            or self.admin_lock.locked()
        )


@dataclass(frozen=True, slots=True)
class ConversationView:
    """A conversation with its members, as callers see it."""

    record: ConversationRecord
    members: dict[str, Role]
    table: MemberTable | None = None
    """The live member table `members` was copied from, for caches keyed by its version."""
    version: int = 0
    """`table`'s version when `members` was copied."""


@dataclass(frozen=True, slots=True)
class ConversationSummary:
    """One of a user's conversations with the user's position in it."""

    membership: Membership
    unread_count: int


def unread(last_seq: int, first_seq: int, read_seq: int) -> int:
    """Messages after the read position that are still retained."""
    return max(0, last_seq - max(read_seq, first_seq - 1))


def new_room_id() -> str:
    """An unguessable room id: ``room:`` and 128 random bits."""
    return f"room:{secrets.token_urlsafe(16)}"


def direct_id(first: str, second: str) -> str:
    """The stable id of the direct conversation of two users (sorted, length-prefixed)."""
    first, second = sorted((first, second))
    # Length-prefixed so that ids containing ':' cannot collide.
    return f"dm:{len(first)}:{first}:{second}"


def _not_found(conversation_id: str) -> RpcError:
    # The same code and words whether the conversation is missing or the caller
    # is not a member: the answer must not reveal that it exists.
    return RpcError(StatusCode.NOT_FOUND, f"unknown conversation {conversation_id!r}")


class Conversations:
    """The conversation cache and the membership routes (create, join, leave, roles)."""

    def __init__(
        self,
        storage: Storage,
        delivery: Delivery,
        limits: ImLimits,
        rates: Rates,
        now_ms: Callable[[], int],
    ) -> None:
        self._storage = storage
        self._delivery = delivery
        self._limits = limits
        self._rates = rates
        self._now_ms = now_ms
        self._rooms: dict[str, Room] = {}
        self._loads: dict[str, asyncio.Future[Room | None]] = {}
        self._evict_at = limits.max_cached_rooms
        self.attach: Callable[[str], Awaitable[Room | None]] | None = None
        """Set on a cluster (`flare_runtime.im.cluster`): the cached room of a conversation
        this node follows (its events subscribed before it was read), or None for
        any other, which is then read from storage for each request and not cached:
        only a followed conversation's cache is kept current by its events."""

    # -- the cache -------------------------------------------------------------------

    def cached(self, conversation_id: str) -> Room | None:
        """The conversation's room if it is in memory (no storage access)."""
        return self._rooms.get(conversation_id)

    def cached_count(self) -> int:
        """Conversations held in memory."""
        return len(self._rooms)

    async def room(self, conversation_id: str) -> Room | None:
        """The conversation's room, loaded once (concurrent callers share the load)."""
        room = self._rooms.get(conversation_id)
        if room is not None:
            room.last_used = time.monotonic()
            return room
        check_id(conversation_id, "conversation id", self._limits.max_id_chars)
        if self.attach is not None:
            followed = await self.attach(conversation_id)
            return followed if followed is not None else await self.read(conversation_id)
        loading = self._loads.get(conversation_id)
        while loading is not None:
            # Wait without inheriting the loader's cancellation (only our own).
            await asyncio.wait((loading,))
            if not loading.cancelled():
                return loading.result()  # re-raises the load's error
            # The loading call was cancelled: load again (or wait for whoever does).
            room = self._rooms.get(conversation_id)
            if room is not None:
                return room
            loading = self._loads.get(conversation_id)
        future: asyncio.Future[Room | None] = asyncio.get_running_loop().create_future()
        self._loads[conversation_id] = future
        try:
            loaded = await self.read(conversation_id)
            if loaded is not None:
                self._remember(loaded)
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
            del self._loads[conversation_id]

    async def read(self, conversation_id: str) -> Room | None:
        """The conversation as stored now, with its members (not cached)."""
        record = await self._storage.get_conversation(conversation_id)
        if record is None:
            return None
        return Room(record, await self._storage.members(conversation_id))

    def _remember(self, room: Room) -> Room:
        if self.attach is not None:
            return room  # on a cluster only followed conversations are cached (`remember`)
        self._rooms[room.conversation_id] = room
        if len(self._rooms) > self._evict_at:
            self._evict_idle()
        return room

    def remember(self, room: Room) -> None:
        """Cache a followed conversation's room until `forget` (a cluster's relay)."""
        self._rooms[room.conversation_id] = room

    def forget(self, conversation_id: str) -> Room | None:
        """Drop a conversation from the cache (work in flight finishes on the old room)."""
        return self._rooms.pop(conversation_id, None)

    def _evict_idle(self) -> None:
        """Drop rooms unused for `room_idle_seconds` with nothing in flight.

        A dropped room is read again from storage on its next use, where its
        sequencer starts after the stored last seq (nothing of ours is in
        flight, so that is where it stood). Runs when the cache has grown a
        quarter past the last sweep, so its cost is spread over the loads.
        """
        limits = self._limits
        idle_since = time.monotonic() - limits.room_idle_seconds
        idle = [
            conversation_id
            for conversation_id, room in self._rooms.items()
            if room.last_used < idle_since and room.quiet
        ]
        for conversation_id in idle[: max(0, len(self._rooms) - limits.max_cached_rooms)]:
            del self._rooms[conversation_id]
        self._evict_at = max(
            limits.max_cached_rooms, len(self._rooms) + max(1, limits.max_cached_rooms // 4)
        )

    async def existing_room(self, conversation_id: str) -> Room:
        """The conversation's room; NOT_FOUND when there is no such conversation."""
        room = await self.room(conversation_id)
        if room is None:
            raise _not_found(conversation_id)
        return room

    async def member_room(self, session: Session, conversation_id: str) -> Room:
        """The room of a conversation the session's user belongs to; else NOT_FOUND."""
        require_open(session)
        room = await self.room(conversation_id)
        if room is None or session.user_id not in room.members:
            raise _not_found(conversation_id)
        return room

    # -- reading ---------------------------------------------------------------------

    @staticmethod
    def view(room: Room) -> ConversationView:
        """The conversation as callers see it (its last seq is the last one delivered)."""
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
        members = room.members
        return ConversationView(current, dict(members), members, members.version)

    async def get_conversation(self, session: Session, conversation_id: str) -> ConversationView:
        """The conversation and its members (members only)."""
        return self.view(await self.member_room(session, conversation_id))

    async def list_conversations(
        self, session: Session, *, after: str = "", limit: int = 0
    ) -> tuple[list[ConversationSummary], bool]:
        """A page of the user's conversations (by id, after `after`) and whether more follow."""
        require_open(session)
        page = page_size(
            limit, self._limits.conversations_page_max, self._limits.conversations_page_max
        )
        memberships = await self._storage.memberships(session.user_id, after=after, limit=page + 1)
        summaries = []
        for membership in memberships[:page]:
            record = membership.conversation
            room = self._rooms.get(record.conversation_id)
            last_seq = room.last_seq if room is not None else record.last_seq
            summaries.append(
                ConversationSummary(
                    membership, unread(last_seq, record.first_seq, membership.receipt.read_seq)
                )
            )
        return summaries, len(memberships) > page

    # -- creating ----------------------------------------------------------------------

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
        require_open(session)
        limits = self._limits
        limit = member_limit or limits.max_member_limit
        if len(title) > limits.max_title_chars:
            raise RpcError(
                StatusCode.INVALID_ARGUMENT,
                f"title is longer than {limits.max_title_chars} characters",
            )
        if limit > limits.max_member_limit:
            raise RpcError(
                StatusCode.INVALID_ARGUMENT, f"member limit is at most {limits.max_member_limit}"
            )
        check_count(len(member_user_ids), "members", limits.max_members_per_request)
        members = {user: Role.MEMBER for user in member_user_ids}
        for user in members:
            check_id(user, "user id", limits.max_id_chars)
        members[session.user_id] = Role.OWNER
        if len(members) > limit:
            raise RpcError(StatusCode.RESOURCE_EXHAUSTED, f"a room of at most {limit} members")
        self._rates.create.take(session.user_id)
        record = self._new_record(
            new_room_id(), ConversationKind.ROOM, title, open=open, member_limit=limit
        )
        stored = await self._storage.create_conversation(record, members)
        room = self._remember(Room(stored, dict(members)))
        self._membership_changed(
            room, members, events_pb2.MembershipChanged.CHANGE_JOINED, session.user_id
        )
        return self.view(room)

    async def ensure_room(
        self, conversation_id: str, title: str, *, open: bool = True, owner: str = ""
    ) -> ConversationView:
        """Create a room with a fixed id unless it exists (an operator action, e.g. a lobby).

        `owner`, when given, becomes the first member (OWNER).
        """
        check_id(conversation_id, "conversation id", self._limits.max_id_chars)
        room = await self.room(conversation_id)
        if room is None:
            record = self._new_record(
                conversation_id,
                ConversationKind.ROOM,
                title,
                open=open,
                member_limit=self._limits.max_member_limit,
            )
            with contextlib.suppress(ConversationExistsError):
                await self._storage.create_conversation(
                    record, {owner: Role.OWNER} if owner else {}
                )
            room = await self.room(conversation_id)
            assert room is not None
        return self.view(room)

    async def open_direct(self, session: Session, peer_user_id: str) -> ConversationView:
        """The one-to-one conversation of the session's user and `peer_user_id` (created once)."""
        require_open(session)
        check_id(peer_user_id, "peer user id", self._limits.max_id_chars)
        if peer_user_id == session.user_id:
            raise RpcError(StatusCode.INVALID_ARGUMENT, "a direct conversation needs another user")
        conversation_id = direct_id(session.user_id, peer_user_id)
        room = await self.room(conversation_id)
        if room is None:
            self._rates.create.take(session.user_id)
            record = self._new_record(
                conversation_id, ConversationKind.DIRECT, "", open=False, member_limit=2
            )
            members = {session.user_id: Role.MEMBER, peer_user_id: Role.MEMBER}
            # Created concurrently: load it below.
            with contextlib.suppress(ConversationExistsError):
                await self._storage.create_conversation(record, members)
            if self._delivery.relay is not None:
                self._delivery.relay.direct_opened(conversation_id, list(members))
            room = await self.room(conversation_id)
            assert room is not None
        return self.view(room)

    # -- membership ----------------------------------------------------------------------

    def _membership_changed(
        self, room: Room, changes: Mapping[str, Role | None], change: int, actor: str
    ) -> None:
        """Push one ``MembershipChanged`` per changed user (`changes`: user -> new role)."""
        pushes = []
        for user_id, role in changes.items():
            payload = events_pb2.MembershipChanged(
                conversation_id=room.conversation_id,
                user_id=user_id,
                change=change,  # type: ignore[arg-type]
                role=int(role) if role is not None else 0,  # type: ignore[arg-type]
                actor_user_id=actor,
            ).SerializeToString()
            pushes.append((user_id, PreparedPush(events.MEMBERSHIP_CHANGED, payload)))
        relay = self._delivery.relay
        if relay is not None:
            relay.membership_changed(room, pushes)
            return
        for user_id, event in pushes:
            # `also`: a member who leaves gets the change too, even once it is gone.
            self._delivery.publish(room, Fanout(event, room.members, also=user_id))

    @staticmethod
    def _require_room_kind(room: Room) -> None:
        if room.record.kind is not ConversationKind.ROOM:
            raise RpcError(
                StatusCode.FAILED_PRECONDITION, "membership of a direct conversation is fixed"
            )

    @staticmethod
    def _require_space(room: Room, joining: int) -> None:
        if len(room.members) + joining > room.record.member_limit:
            raise RpcError(
                StatusCode.RESOURCE_EXHAUSTED,
                f"conversation is limited to {room.record.member_limit} members",
            )

    async def join_room(self, session: Session, conversation_id: str) -> ConversationView:
        """Join an open room (no-op for a member). Anything else is NOT_FOUND to a non-member."""
        require_open(session)
        user = session.user_id
        self._rates.membership.take(user)
        room = await self.room(conversation_id)
        if room is None:
            raise _not_found(conversation_id)
        async with room.admin_lock:
            if user in room.members:
                self._require_room_kind(room)
                return self.view(room)
            if room.record.kind is not ConversationKind.ROOM or not room.record.open:
                raise _not_found(conversation_id)
            self._require_space(room, 1)
            await self._storage.put_members(conversation_id, {user: Role.MEMBER})
            room.members[user] = Role.MEMBER
            self._membership_changed(
                room, {user: Role.MEMBER}, events_pb2.MembershipChanged.CHANGE_JOINED, user
            )
            return self.view(room)

    async def leave_room(self, session: Session, conversation_id: str) -> None:
        """Leave a room; a no-op for a non-member (whether or not the conversation exists).

        The owner must hand ownership over first (FAILED_PRECONDITION).
        """
        require_open(session)
        user = session.user_id
        self._rates.membership.take(user)
        room = await self.room(conversation_id)
        if room is None or user not in room.members:
            return
        self._require_room_kind(room)
        async with room.admin_lock:
            role = room.members.get(user)
            if role is None:
                return
            if role is Role.OWNER:
                raise RpcError(
                    StatusCode.FAILED_PRECONDITION, "the owner cannot leave: transfer ownership"
                )
            await self._storage.remove_member(conversation_id, user)
            self._membership_changed(
                room, {user: None}, events_pb2.MembershipChanged.CHANGE_LEFT, user
            )
            room.members.pop(user, None)  # a cluster's relay may have removed it already

    async def add_members(
        self, session: Session, conversation_id: str, user_ids: Sequence[str]
    ) -> ConversationView:
        """Add users to a room (owner or admin); members already in are skipped."""
        check_count(len(user_ids), "members", self._limits.max_members_per_request)
        for user in user_ids:
            check_id(user, "user id", self._limits.max_id_chars)
        self._rates.membership.take(session.user_id)
        room = await self.member_room(session, conversation_id)
        self._require_room_kind(room)
        async with room.admin_lock:
            if room.members.get(session.user_id, Role.MEMBER) < Role.ADMIN:
                raise RpcError(StatusCode.PERMISSION_DENIED, "only an owner or admin adds members")
            new = {user: Role.MEMBER for user in user_ids if user not in room.members}
            if not new:
                return self.view(room)
            self._require_space(room, len(new))
            await self._storage.put_members(conversation_id, new)
            room.members.update(new)
            self._membership_changed(
                room, new, events_pb2.MembershipChanged.CHANGE_JOINED, session.user_id
            )
            return self.view(room)

    async def kick_member(self, session: Session, conversation_id: str, user_id: str) -> None:
        """Remove `user_id` from a room: the owner removes anyone, an admin removes members."""
        self._rates.membership.take(session.user_id)
        room = await self.member_room(session, conversation_id)
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
            await self._storage.remove_member(conversation_id, user_id)
            self._membership_changed(
                room, {user_id: None}, events_pb2.MembershipChanged.CHANGE_KICKED, session.user_id
            )
            room.members.pop(user_id, None)  # a cluster's relay may have removed it already

    async def set_member_role(
        self, session: Session, conversation_id: str, user_id: str, role: Role
    ) -> ConversationView:
        """Change a member's role (owner only). Making someone OWNER makes the caller ADMIN."""
        self._rates.membership.take(session.user_id)
        room = await self.member_room(session, conversation_id)
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
            await self._storage.put_members(conversation_id, changes)
            room.members.update(changes)
            self._membership_changed(
                room,
                changes,
                events_pb2.MembershipChanged.CHANGE_ROLE_CHANGED,
                session.user_id,
            )
            return self.view(room)
