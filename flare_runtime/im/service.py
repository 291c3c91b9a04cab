"""`ImService`: the generated ``flare.im.v1.ImService`` base, implemented over `ImCore`.

::

    core = ImCore(SqliteStorage("im.db", keyring))
    await core.start()
    server = flare.Server([ImService(core)], auth=JWTAuth(key),
                          push_tables=[ImService.PUSH_TYPES])
    await server.serve(websocket="0.0.0.0:8080")

The runtime authenticates the connection (its auth plugin sets the
principal, whose subject is the IM user id). ``Login`` then binds an IM
session to the connection (the service's own table, keyed weakly by
connection): on WebSocket and QUIC the session's events are server pushes on
that connection (each fanned-out frame encoded once), and the session ends
when the connection closes. A second ``Login`` on a connection replaces its
session only once it succeeds; a refused one leaves the session as it was. gRPC has no pushes and no
connection object: there a session is named by the ``flare-im-session``
request header (the ``session_id`` from ``Login``), its events come from
``Subscribe``, and it ends at ``Logout``, when its ``Subscribe`` stream ends,
or when no ``Subscribe`` starts within `DETACHED_SUBSCRIBE_TIMEOUT`.
"""

from __future__ import annotations

import asyncio
import sys
import weakref
from collections.abc import AsyncIterator
from typing import Final

from flare.im.v1 import events_flare, events_pb2, im_pb2
from flare.im.v1.im_flare import ImServiceBase

from flare_runtime.context import CallContext
from flare_runtime.errors import RpcError
from flare_runtime.im import events
from flare_runtime.im.core import ConversationView, ImCore, Session, SyncCursor
from flare_runtime.im.sinks import EventSink, QueueSink
from flare_runtime.im.storage.base import Role, StoredMessage
from flare_runtime.routing import PushTable
from flare_runtime.server_connection import PreparedPush, ServerConnection
from flare_runtime.status import StatusCode

SESSION_HEADER: Final = "flare-im-session"
"""Request header naming the IM session on transports without a connection (gRPC)."""

DETACHED_SUBSCRIBE_TIMEOUT: Final = 30.0
"""Seconds a gRPC session may live without a ``Subscribe`` stream."""


class ConnectionSink:
    """An `EventSink` over a runtime connection: each event is one server push.

    Sends the event's pre-encoded PUSH frame, so a room's fan-out builds the
    frame once for all recipients.
    """

    __slots__ = ("_gone", "connection")

    abort_after: float = 1.0
    """Seconds a closed connection may take to flush before it is aborted.

    A graceful close queues the CLOSE frame behind everything already
    buffered; a client that does not read (a slow consumer) would hold the
    socket open for ever, so it is cut off after this delay.
    """

    def __init__(self, connection: ServerConnection) -> None:
        self.connection = connection
        self._gone = False

    def offer(self, event: PreparedPush, limit: int) -> bool:
        connection = self.connection
        if connection.buffered_bytes > limit:
            return False
        connection.push_prepared(event)  # ConnectionClosedError when closed
        return True

    @property
    def closed(self) -> bool:
        return self.connection.closed

    def close(self, reason: str = "") -> None:
        connection = self.connection
        if connection.buffered_bytes:
            connection.add_close_callback(self._mark_gone)
            asyncio.get_running_loop().call_later(self.abort_after, self._abort_if_open, reason)
        connection.close(reason)

    def _mark_gone(self, _connection: ServerConnection) -> None:
        self._gone = True

    def _abort_if_open(self, reason: str) -> None:
        if not self._gone:
            self.connection.abort(f"{reason} (close not read within {self.abort_after} s)")


def _messages_into(target: object, messages: list[StoredMessage]) -> None:
    add = target.add  # type: ignore[attr-defined]
    for message in messages:
        add().MergeFromString(events.message_bytes(message))


def _conversation_info(view: ConversationView) -> im_pb2.ConversationInfo:
    record = view.record
    info = im_pb2.ConversationInfo(
        conversation_id=record.conversation_id,
        kind=int(record.kind),  # type: ignore[arg-type]
        title=record.title,
        open=record.open,
        member_limit=record.member_limit,
        epoch=record.epoch,
        first_seq=record.first_seq,
        last_seq=record.last_seq,
        created_at_ms=record.created_at_ms,
    )
    info.MergeFromString(_encoded_members(view))
    return info


def _encoded_members(view: ConversationView) -> bytes:
    """The member list as ConversationInfo's encoded ``members`` field, in user order.

    Built once per version of the room's member table and reused until the next
    change: encoding a room of `ImLimits.max_member_limit` members costs tens of
    milliseconds of the loop, merging the cached bytes a fraction of one.
    """
    table = view.table
    if table is not None:
        cached = table.encoded
        if cached is not None and cached[0] == view.version:
            return cached[1]
    holder = im_pb2.ConversationInfo()
    add = holder.members.add  # in place: ~7x faster than a Member object per member
    for user, role in sorted(view.members.items()):
        add(user_id=user, role=int(role))
    encoded = holder.SerializeToString()
    if table is not None and table.version == view.version:
        table.encoded = (view.version, encoded)
    return encoded


class ImService(ImServiceBase):
    """Serves the IM API from an `ImCore` (started and closed by its owner)."""

    PUSH_TYPES: Final[PushTable] = events_flare.PUSH_TYPES
    """The IM events' push types: give them to the `Server` (``push_tables=``) and clients."""

    def __init__(self, core: ImCore) -> None:
        self.core = core
        self._detached: dict[str, Session] = {}
        """gRPC sessions by session id."""
        self._by_connection: weakref.WeakKeyDictionary[ServerConnection, Session | None] = (
            weakref.WeakKeyDictionary()
        )
        """The IM session of each connection that logged in (None after Logout).

        A connection in this table has a close callback that logs its session out.
        """

    def process_sharing_problem(self) -> str | None:
        """Its core's answer (`flare_runtime.sharing`)."""
        return self.core.process_sharing_problem()

    # -- sessions ----------------------------------------------------------------

    @staticmethod
    def _user(context: CallContext) -> str:
        if context.principal is None:
            raise RpcError(StatusCode.UNAUTHENTICATED, "log in to the server first")
        return context.principal.subject

    def _session(self, context: CallContext) -> Session:
        user = self._user(context)
        connection = context.connection
        if connection is not None:
            session = self._by_connection.get(connection)
        else:
            named = context.metadata.get(SESSION_HEADER)
            session = self._detached.get(named) if isinstance(named, str) else None
        if not isinstance(session, Session) or session.closed or session.user_id != user:
            raise RpcError(StatusCode.FAILED_PRECONDITION, "no IM session: call Login first")
        return session

    async def login(self, request: im_pb2.LoginRequest, context: CallContext) -> im_pb2.LoginReply:
        user = self._user(context)
        connection = context.connection
        if connection is None:
            session, replaced = await self.core.open_session(
                user, request.device_id, int(request.platform), QueueSink()
            )
            self._detached[session.session_id] = session
            asyncio.get_running_loop().call_later(
                DETACHED_SUBSCRIBE_TIMEOUT, self._expire_unsubscribed, session
            )
        else:
            # One IM session per connection: a new login retires the previous
            # one, but only if it succeeds.
            session, replaced = await self.core.open_session(
                user,
                request.device_id,
                int(request.platform),
                ConnectionSink(connection),
                retire=self._by_connection.get(connection),
            )
            hooked = connection in self._by_connection
            self._by_connection[connection] = session
            if not hooked:
                # One hook per connection, not per Login: a client logging in
                # again and again must not grow the connection's callbacks.
                # (Called at once when the connection closed meanwhile.)
                connection.add_close_callback(self._connection_closed)
        for old in replaced:
            self._detached.pop(old, None)
        return im_pb2.LoginReply(
            session_id=session.session_id,
            user_id=user,
            server_time_ms=self.core.now_ms(),
            replaced_session_ids=replaced,
        )

    def _connection_closed(self, connection: ServerConnection) -> None:
        session = self._by_connection.pop(connection, None)
        if session is not None:
            self.core.logout(session)

    def _expire_unsubscribed(self, session: Session) -> None:
        # A session the core ended meanwhile (kicked, cut off) is forgotten
        # here too; a subscribed one is forgotten when its stream ends.
        if isinstance(session.sink, _SubscribedSink) and not session.closed:
            return
        self._detached.pop(session.session_id, None)
        self.core.logout(session)

    async def logout(
        self, request: im_pb2.LogoutRequest, context: CallContext
    ) -> im_pb2.LogoutReply:
        session = self._session(context)
        self._detached.pop(session.session_id, None)
        self.core.logout(session)
        if context.connection is not None:
            self._by_connection[context.connection] = None
        return im_pb2.LogoutReply()

    async def subscribe(
        self, request: im_pb2.SubscribeRequest, context: CallContext
    ) -> AsyncIterator[events_pb2.Event]:
        session = self._session(context)
        previous = session.sink
        # A newer stream replaces an older one, which ends; the session then
        # goes back to the older stream's fallback, never to the ended stream.
        superseded = previous if isinstance(previous, _SubscribedSink) else None
        if superseded is not None:
            previous = superseded.fallback
        sink = _SubscribedSink(previous)
        source = superseded or previous
        if isinstance(source, QueueSink):
            # Events queued since Login (gRPC) or by an earlier stream are not lost.
            for type_id, payload in source.take():
                sink.offer(PreparedPush(type_id, payload), sys.maxsize)
        if superseded is not None:
            superseded.close("superseded by a newer Subscribe")
        session.sink = sink
        try:
            while True:
                item = await sink.next()
                if item is None:
                    return
                yield events.to_event(*item)
        finally:
            if session.sink is sink:
                if context.connection is None or previous.closed:
                    self._detached.pop(session.session_id, None)
                    self.core.logout(session)
                else:
                    session.sink = previous  # back to pushes on the connection

    # -- messages ----------------------------------------------------------------

    async def send(self, request: im_pb2.SendRequest, context: CallContext) -> im_pb2.SendReply:
        session = self._session(context)
        if request.content.WhichOneof("body") is None:
            raise RpcError(StatusCode.INVALID_ARGUMENT, "message content is empty")
        result = await self.core.send(
            session,
            request.conversation_id,
            request.client_message_id,
            request.content.SerializeToString(),
        )
        message = result.message
        return im_pb2.SendReply(
            message_id=message.message_id,
            seq=message.seq,
            epoch=message.epoch,
            sent_at_ms=message.sent_at_ms,
            duplicate=result.duplicate,
        )

    async def sync(self, request: im_pb2.SyncRequest, context: CallContext) -> im_pb2.SyncReply:
        session = self._session(context)
        cursors = [
            SyncCursor(cursor.conversation_id, cursor.epoch, cursor.last_seq)
            for cursor in request.cursors
        ]
        reply = im_pb2.SyncReply()
        for result in await self.core.sync(session, cursors, request.limit):
            entry = reply.conversations.add(
                conversation_id=result.conversation_id,
                epoch=result.epoch,
                first_seq=result.first_seq,
                last_seq=result.last_seq,
                has_more=result.has_more,
                resync_reason=result.resync_reason,
            )
            entry.status = (
                im_pb2.ConversationSync.STATUS_RESYNC_REQUIRED
                if result.resync_required
                else im_pb2.ConversationSync.STATUS_OK
            )
            _messages_into(entry.messages, result.messages)
        return reply

    async def get_history(
        self, request: im_pb2.GetHistoryRequest, context: CallContext
    ) -> im_pb2.GetHistoryReply:
        session = self._session(context)
        messages, has_more, view = await self.core.history(
            session, request.conversation_id, request.before_seq, request.limit
        )
        reply = im_pb2.GetHistoryReply(
            has_more=has_more, epoch=view.record.epoch, first_seq=view.record.first_seq
        )
        _messages_into(reply.messages, messages)
        return reply

    async def ack(self, request: im_pb2.AckRequest, context: CallContext) -> im_pb2.AckReply:
        session = self._session(context)
        receipt, unread = await self.core.ack(
            session, request.conversation_id, request.delivered_seq, request.read_seq
        )
        return im_pb2.AckReply(
            delivered_seq=receipt.delivered_seq, read_seq=receipt.read_seq, unread_count=unread
        )

    async def set_typing(
        self, request: im_pb2.SetTypingRequest, context: CallContext
    ) -> im_pb2.SetTypingReply:
        await self.core.set_typing(self._session(context), request.conversation_id, request.typing)
        return im_pb2.SetTypingReply()

    # -- presence ----------------------------------------------------------------

    async def watch_presence(
        self, request: im_pb2.WatchPresenceRequest, context: CallContext
    ) -> im_pb2.WatchPresenceReply:
        states = await self.core.watch_presence(
            self._session(context), list(request.user_ids), unwatch=request.unwatch
        )
        return im_pb2.WatchPresenceReply(
            users=[
                im_pb2.UserPresence(user_id=user, online=online) for user, online in states.items()
            ]
        )

    async def get_online_members(
        self, request: im_pb2.GetOnlineMembersRequest, context: CallContext
    ) -> im_pb2.GetOnlineMembersReply:
        users = await self.core.online_members(self._session(context), request.conversation_id)
        return im_pb2.GetOnlineMembersReply(user_ids=users)

    # -- conversations -----------------------------------------------------------

    async def create_room(
        self, request: im_pb2.CreateRoomRequest, context: CallContext
    ) -> im_pb2.ConversationInfo:
        view = await self.core.create_room(
            self._session(context),
            request.title,
            list(request.member_user_ids),
            open=request.open,
            member_limit=request.member_limit,
        )
        return _conversation_info(view)

    async def open_direct(
        self, request: im_pb2.OpenDirectRequest, context: CallContext
    ) -> im_pb2.ConversationInfo:
        view = await self.core.open_direct(self._session(context), request.peer_user_id)
        return _conversation_info(view)

    async def join_room(
        self, request: im_pb2.JoinRoomRequest, context: CallContext
    ) -> im_pb2.ConversationInfo:
        view = await self.core.join_room(self._session(context), request.conversation_id)
        return _conversation_info(view)

    async def leave_room(
        self, request: im_pb2.LeaveRoomRequest, context: CallContext
    ) -> im_pb2.LeaveRoomReply:
        await self.core.leave_room(self._session(context), request.conversation_id)
        return im_pb2.LeaveRoomReply()

    async def add_members(
        self, request: im_pb2.AddMembersRequest, context: CallContext
    ) -> im_pb2.ConversationInfo:
        view = await self.core.add_members(
            self._session(context), request.conversation_id, list(request.user_ids)
        )
        return _conversation_info(view)

    async def kick_member(
        self, request: im_pb2.KickMemberRequest, context: CallContext
    ) -> im_pb2.KickMemberReply:
        await self.core.kick_member(
            self._session(context), request.conversation_id, request.user_id
        )
        return im_pb2.KickMemberReply()

    async def set_member_role(
        self, request: im_pb2.SetMemberRoleRequest, context: CallContext
    ) -> im_pb2.ConversationInfo:
        if request.role not in (
            events_pb2.ROLE_MEMBER,
            events_pb2.ROLE_ADMIN,
            events_pb2.ROLE_OWNER,
        ):
            raise RpcError(StatusCode.INVALID_ARGUMENT, "role must be MEMBER, ADMIN or OWNER")
        view = await self.core.set_member_role(
            self._session(context), request.conversation_id, request.user_id, Role(request.role)
        )
        return _conversation_info(view)

    async def list_conversations(
        self, request: im_pb2.ListConversationsRequest, context: CallContext
    ) -> im_pb2.ListConversationsReply:
        summaries, has_more = await self.core.list_conversations(
            self._session(context), after=request.after_conversation_id, limit=request.limit
        )
        reply = im_pb2.ListConversationsReply(has_more=has_more)
        for summary in summaries:
            membership = summary.membership
            record = membership.conversation
            reply.conversations.add(
                conversation_id=record.conversation_id,
                kind=int(record.kind),
                title=record.title,
                epoch=record.epoch,
                last_seq=record.last_seq,
                delivered_seq=membership.receipt.delivered_seq,
                read_seq=membership.receipt.read_seq,
                unread_count=summary.unread_count,
                role=int(membership.role),
            )
        return reply

    async def get_conversation(
        self, request: im_pb2.GetConversationRequest, context: CallContext
    ) -> im_pb2.ConversationInfo:
        view = await self.core.get_conversation(self._session(context), request.conversation_id)
        return _conversation_info(view)


class _SubscribedSink(QueueSink):
    """The sink of a session whose events flow through a ``Subscribe`` stream."""

    __slots__ = ("fallback",)

    def __init__(self, fallback: EventSink) -> None:
        super().__init__()
        self.fallback = fallback
        """The sink the session goes back to when the stream ends."""
