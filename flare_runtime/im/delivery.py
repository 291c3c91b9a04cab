"""Delivery: each conversation's sequencer, and the fan-out of events to devices.

The rules (docs/im.md, "Delivery guarantees"):

* **Gap-free order.** Storage assigns each message the next seq of its
  conversation, but concurrent appends may finish in any order. `appended`
  hands each stored message to the conversation's sequencer, which pushes
  messages strictly in seq order: a message whose predecessor is still being
  written waits in `Channel.pending` until the gap closes.
* **Foreign gaps.** A gap left when no append of this process is under way
  belongs to another writer (another process on a shared PostgreSQL): the
  sequencer skips it, since those messages reach devices through ``Sync``.
  On a cluster the other writers' messages arrive too, through the broker:
  there the `Relay` waits a moment for the gap to close and then fills it
  from storage (a message is committed before it is published).
* **On a cluster** (`Delivery.relay` set, `flare_runtime.im.cluster`) the
  events a request produces are handed to the relay, which publishes them to
  every node, this one included; each node's relay feeds what it receives
  back into `sequence` and `publish`, so every node runs the same sequencer
  and fan-out.
* **One order per conversation.** Every event of a conversation (messages,
  receipts, typing, membership changes) is queued in the conversation's
  outbox and delivered in the order it was published. An event is one
  `PreparedPush`: serialized once, the same bytes for every device.
* **Bounded steps.** A fan-out visits at most `ImLimits.fanout_batch`
  recipients per step. Work published by a request runs at once while the
  event loop's current pass has budget left; the rest runs in later loop
  callbacks, one step each, so no request holds the loop for long and
  conversations take turns. A fan-out to a conversation walks its members or
  the online users, whichever is fewer.
* **Slow consumers.** A device whose sink holds more than
  `ImLimits.outbound_buffer_bytes` refuses the event; after the step it is
  ended as a slow consumer (`Sessions.cut_off`) instead of slowing the room.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Protocol

from flare_runtime.im import events
from flare_runtime.im.limits import ImLimits
from flare_runtime.im.sessions import Session, Sessions
from flare_runtime.im.storage.base import AppendResult, Role
from flare_runtime.server_connection import PreparedPush


class Fanout:
    """One event and who gets it: the devices of `users` (plus `also`), or `sessions`.

    `users` may be a conversation's live member table: it is read when the
    fan-out is delivered, and copied only when the fan-out takes several steps.
    """

    __slots__ = ("also", "event", "exclude", "offset", "remaining", "sessions", "skip", "users")

    def __init__(
        self,
        event: PreparedPush,
        users: Collection[str] = (),
        *,
        sessions: Sequence[Session] = (),
        also: str = "",
        exclude: str = "",
        skip: Session | None = None,
    ) -> None:
        self.event = event
        self.users = users
        self.sessions = sessions
        self.also = also
        """One more user whose devices get the event (e.g. a member who just left)."""
        self.exclude = exclude
        """A user whose devices do not get the event."""
        self.skip = skip
        """A device that does not get the event (its sender)."""
        self.remaining: list[str] | list[Session] | None = None
        """The recipients, copied once the fan-out needs more than one step."""
        self.offset = 0


class Outbox:
    """Fan-outs published and not yet fully delivered, in order.

    While it is not empty it is `draining`: being delivered, or a step of it
    is scheduled on the event loop, so a new fan-out only has to be appended.
    """

    __slots__ = ("draining", "queue")

    def __init__(self) -> None:
        self.queue: deque[Fanout] = deque()
        self.draining = False


class MemberTable(dict[str, Role]):
    """A conversation's members (user id -> role) that counts its changes.

    `version` grows with every change, so what is built from the members -- the
    encoded member list of a reply, kept in `encoded` -- is reused until the
    next change instead of rebuilt per request (a room has up to
    `ImLimits.max_member_limit` members).
    """

    __slots__ = ("encoded", "version")

    def __init__(self, members: Mapping[str, Role] = {}) -> None:
        super().__init__(members)
        self.version = 0
        self.encoded: tuple[int, bytes] | None = None
        """``(version, bytes)`` of the member list as last encoded (by the IM service)."""

    def __setitem__(self, user_id: str, role: Role) -> None:
        super().__setitem__(user_id, role)
        self.version += 1

    def __delitem__(self, user_id: str) -> None:
        super().__delitem__(user_id)
        self.version += 1

    def pop(self, user_id: str, *default: Any) -> Any:
        self.version += 1
        return super().pop(user_id, *default)

    def popitem(self) -> tuple[str, Role]:
        self.version += 1
        return super().popitem()

    def setdefault(self, user_id: str, role: Role = Role.MEMBER) -> Role:
        self.version += 1
        return super().setdefault(user_id, role)

    def update(self, *args: Any, **kwargs: Role) -> None:
        self.version += 1
        super().update(*args, **kwargs)

    def clear(self) -> None:
        self.version += 1
        super().clear()


class Channel(Outbox):
    """One conversation's delivery state: its members, its sequencer and its outbox."""

    __slots__ = ("appending", "last_seq", "members", "next_delivery_seq", "pending")

    def __init__(self, members: dict[str, Role], last_seq: int) -> None:
        super().__init__()
        self.members = members if isinstance(members, MemberTable) else MemberTable(members)
        """user id -> role; the fan-out reads it live."""
        self.next_delivery_seq = last_seq + 1
        """The seq the sequencer pushes next."""
        self.last_seq = last_seq
        """The newest seq handed to the fan-out."""
        self.pending: dict[int, PreparedPush] = {}
        """Messages (by seq) stored but waiting for an earlier seq (the sequencer's gap)."""
        self.appending = 0
        """Appends of this process under way (their seqs may still fill a gap)."""

    @property
    def epoch(self) -> int:
        """The conversation's current epoch (messages of another one are not delivered)."""
        raise NotImplementedError

    @property
    def conversation_id(self) -> str:
        raise NotImplementedError


class Relay(Protocol):
    """Where a clustered core's events go instead of straight to its fan-out.

    Implemented by `flare_runtime.im.cluster.ImCluster`, which publishes each
    event to every node (this one included) and hands what it receives back
    to `Delivery.sequence` / `Delivery.publish`.
    """

    def message_stored(self, channel: Channel, epoch: int, seq: int, push: PreparedPush) -> None:
        """A message of this node was stored as (epoch, seq); `push` is its ``MessageReceived``."""

    def gap_opened(self, channel: Channel) -> None:
        """The sequencer holds messages after a missing seq (fill it if it stays open)."""

    def conversation_event(
        self,
        channel: Channel,
        push: PreparedPush,
        *,
        exclude: str = "",
        skip: Session | None = None,
    ) -> None:
        """Deliver to the members' devices, but not `exclude`'s nor the `skip` session."""

    def user_event(self, user_id: str, push: PreparedPush) -> None:
        """Deliver to every device of `user_id`."""

    def membership_changed(
        self, channel: Channel, changes: Sequence[tuple[str, PreparedPush]]
    ) -> None:
        """Users joined, left or changed role (one request's changes, one push per user).

        Each push goes to the members' devices and to the changed user's own.
        """

    def history_reset(self, channel: Channel) -> None:
        """The conversation's history was reset (other nodes reload it)."""

    def direct_opened(self, conversation_id: str, user_ids: Sequence[str]) -> None:
        """A direct conversation was created (no event is pushed: its users' nodes follow it)."""


class Delivery:
    """Sequences each conversation's messages and fans events out to devices."""

    def __init__(self, sessions: Sessions, limits: ImLimits) -> None:
        self._sessions = sessions
        self._by_user = sessions.by_user
        self._buffer_limit = limits.outbound_buffer_bytes
        self._batch = limits.fanout_batch
        self._inline_left = limits.fanout_batch
        self._inline_reset_pending = False
        self.relay: Relay | None = None
        """Set on a cluster: events go through it to every node."""
        self.delivered = 0
        """Events handed to devices' sinks so far (one per device per event)."""

    # -- the sequencer -------------------------------------------------------------

    @staticmethod
    def append_started(channel: Channel) -> None:
        """Count an append of this process (call before `Storage.append_soon`)."""
        channel.appending += 1

    def appended(self, channel: Channel, appended: asyncio.Future[AppendResult]) -> bool:
        """An append started with `append_started` finished; True when it stored a new message.

        Runs from the append's own completion (not the sender's task): once
        under way, a message reaches the sequencer even when its sender is
        cancelled, else every later message of the conversation would wait.
        """
        channel.appending -= 1
        if not appended.cancelled() and appended.exception() is None:
            result = appended.result()
            if not result.duplicate:
                message = result.message
                push = PreparedPush(events.MESSAGE_RECEIVED, events.message_received(message))
                if self.relay is not None:
                    self.relay.message_stored(channel, message.epoch, message.seq, push)
                else:
                    self.sequence(channel, message.epoch, message.seq, push)
                return True
        # A failed append or a retry took no seq: gaps left now are another writer's.
        if self.relay is None and channel.pending and channel.appending == 0:
            self._skip_foreign_gaps(channel)
        return False

    def sequence(self, channel: Channel, epoch: int, seq: int, push: PreparedPush) -> None:
        """Deliver messages in seq order: hold early arrivals until the gap before them closes.

        `push` is the message's ``MessageReceived``. A message of another
        epoch, or one already delivered, is dropped.
        """
        if epoch != channel.epoch or seq < channel.next_delivery_seq:
            return  # appended before a history reset, or delivered already
        channel.pending[seq] = push
        self._flush(channel)
        if channel.pending:
            if self.relay is not None:
                self.relay.gap_opened(channel)
            elif channel.appending == 0:
                self._skip_foreign_gaps(channel)

    def _flush(self, channel: Channel) -> None:
        pending = channel.pending
        while channel.next_delivery_seq in pending:
            push = pending.pop(channel.next_delivery_seq)
            channel.last_seq = channel.next_delivery_seq
            channel.next_delivery_seq += 1
            self.publish(channel, Fanout(push, channel.members))

    def _skip_foreign_gaps(self, channel: Channel) -> None:
        """No append of ours is under way, so the gaps left belong to another writer.

        Its messages reach our devices through `sync`; live delivery goes on
        from the next seq we hold.
        """
        while channel.pending:
            channel.next_delivery_seq = min(channel.pending)
            self._flush(channel)

    def skip_to(self, channel: Channel, seq: int) -> None:
        """Deliver nothing before `seq` any more (messages that cannot be had live)."""
        if seq > channel.next_delivery_seq:
            for stale in [held for held in channel.pending if held < seq]:
                del channel.pending[stale]
            channel.next_delivery_seq = seq
            channel.last_seq = max(channel.last_seq, seq - 1)
        self._flush(channel)

    @staticmethod
    def reset(channel: Channel, last_seq: int) -> None:
        """The conversation's history was reset: delivery goes on after `last_seq`."""
        channel.pending.clear()
        channel.next_delivery_seq = last_seq + 1
        channel.last_seq = last_seq

    # -- the fan-out ---------------------------------------------------------------

    def publish(self, outbox: Outbox, fanout: Fanout) -> None:
        """Deliver `fanout` after everything published to `outbox` before it.

        Delivers at once what the event loop's current pass still has budget
        for; the rest goes on in later loop callbacks.
        """
        outbox.queue.append(fanout)
        if outbox.draining:
            return  # being delivered, or a step is scheduled: it will get there
        outbox.draining = True
        budget = self._inline_left
        if budget <= 0:
            self._settle(outbox)
            return
        if not self._inline_reset_pending:
            self._inline_reset_pending = True
            asyncio.get_running_loop().call_soon(self._reset_inline)
        self._inline_left = 0  # what this delivery publishes elsewhere waits for a step
        try:
            budget = self._drain(outbox, budget)
        finally:
            self._inline_left = budget
            self._settle(outbox)

    def _reset_inline(self) -> None:
        self._inline_reset_pending = False
        self._inline_left = self._batch

    def _settle(self, outbox: Outbox) -> None:
        if outbox.queue:
            asyncio.get_running_loop().call_soon(self._step, outbox)
        else:
            outbox.draining = False

    def _step(self, outbox: Outbox) -> None:
        try:
            self._drain(outbox, self._batch)
        finally:
            self._settle(outbox)

    def _drain(self, outbox: Outbox, budget: int) -> int:
        """Deliver queued fan-outs in order while `budget` lasts; returns what is left."""
        queue = outbox.queue
        while queue and budget > 0:
            fanout = queue[0]
            failed: list[Session] = []
            budget = self._deliver(fanout, budget, failed)
            if fanout.remaining is None or fanout.offset >= len(fanout.remaining):
                queue.popleft()
            if failed:
                # After the step: ending sessions changes the tables the step read.
                self._sessions.cut_off(failed)
        return budget

    def _deliver(self, fanout: Fanout, budget: int, failed: list[Session]) -> int:
        """Deliver `fanout`, or its next `budget` recipients; returns the budget left."""
        remaining = fanout.remaining
        if remaining is None:
            if fanout.sessions:
                count = len(fanout.sessions)
                if count <= budget:
                    self._offer_all(fanout.sessions, fanout, failed)
                    return budget - count
                remaining = fanout.remaining = list(fanout.sessions)
            else:
                users, by_user = fanout.users, self._by_user
                walk_members = len(users) <= len(by_user)
                count = (len(users) if walk_members else len(by_user)) + 1
                if count <= budget:
                    if walk_members:
                        self._to_users(users, fanout, failed)
                    else:
                        self._to_users([u for u in by_user if u in users], fanout, failed)
                    if fanout.also and fanout.also not in users:
                        self._to_users((fanout.also,), fanout, failed)
                    return budget - count
                recipients = list(users) if walk_members else [u for u in by_user if u in users]
                if fanout.also and fanout.also not in users:
                    recipients.append(fanout.also)
                remaining = fanout.remaining = recipients
        start = fanout.offset
        end = min(len(remaining), start + budget)
        fanout.offset = end
        chunk = remaining[start:end]
        if fanout.sessions:
            self._offer_all(chunk, fanout, failed)  # type: ignore[arg-type]
        else:
            self._to_users(chunk, fanout, failed)  # type: ignore[arg-type]
        return budget - (end - start)

    def _to_users(self, users: Collection[str], fanout: Fanout, failed: list[Session]) -> None:
        """The hot loop of every fan-out: one `offer` per online device, nothing else."""
        by_user = self._by_user
        event, exclude, skip, limit = fanout.event, fanout.exclude, fanout.skip, self._buffer_limit
        delivered = 0
        for user in users:
            devices = by_user.get(user)
            if devices is None or user == exclude:
                continue
            for session in devices.values():
                if session is skip:
                    continue
                try:
                    if session.sink.offer(event, limit):
                        delivered += 1
                        continue
                except Exception:  # closed (ConnectionClosedError) or unable to take it
                    pass
                failed.append(session)
        self.delivered += delivered

    def _offer_all(
        self, sessions: Sequence[Session], fanout: Fanout, failed: list[Session]
    ) -> None:
        event, limit = fanout.event, self._buffer_limit
        delivered = 0
        for session in sessions:
            if session.closed:
                continue
            try:
                if session.sink.offer(event, limit):
                    delivered += 1
                    continue
            except Exception:  # closed (ConnectionClosedError) or unable to take it
                pass
            failed.append(session)
        self.delivered += delivered
