"""`AdminService`: ``flare.admin.v1.Admin`` over a running `Server` (and its IM core).

Every method needs the ``flare.admin`` scope (declared in the schema, so the
dispatcher refuses a caller without it before any handler runs:
UNAUTHENTICATED without credentials, PERMISSION_DENIED without the scope).
What it reads and does is the node's own: ``server.stats``,
``server.connections``, the IM core's sessions, `Server.request_drain`.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import TYPE_CHECKING

from flare.admin.v1 import admin_pb2
from flare.admin.v1.admin_flare import AdminBase

from flare_runtime.context import CallContext
from flare_runtime.errors import RpcError
from flare_runtime.status import StatusCode

if TYPE_CHECKING:
    from flare_runtime.im.core import ImCore
    from flare_runtime.server import Server

KICK_REASON = "kicked by an administrator"


class AdminService(AdminBase):
    """The admin API of `server` (and of `im`, its IM core, when it serves one)."""

    def __init__(self, server: Server, *, im: ImCore | None = None) -> None:
        self.server = server
        self.im = im
        self.started = time.monotonic()

    async def get_stats(
        self, request: admin_pb2.GetStatsRequest, context: CallContext
    ) -> admin_pb2.GetStatsReply:
        server = self.server
        stats = server.stats
        shared = server.shared_ports
        reply = admin_pb2.GetStatsReply(
            pid=os.getpid(),
            worker=-1 if shared is None else shared.worker,
            ready=server.ready,
            uptime_seconds=time.monotonic() - self.started,
            slow_consumers=stats.slow_consumers,
            connection_auth_failures=stats.connection_auth_failures,
            call_auth_failures=stats.call_auth_failures,
        )
        open_by_transport: dict[str, list[int]] = {}
        for connection in server.connections:
            entry = open_by_transport.setdefault(connection.transport_kind.value, [0, 0, 0, 0])
            received, sent, pushes = connection.traffic()
            entry[0] += 1
            entry[1] += received
            entry[2] += sent
            entry[3] += pushes
        for name in sorted({*stats.transports, *open_by_transport}):
            counts = stats.transport(name)
            live = open_by_transport.get(name, [0, 0, 0, 0])
            reply.transports.add(
                transport=name,
                open=live[0],
                opened=counts.opened,
                bytes_received=counts.bytes_received + live[1],
                bytes_sent=counts.bytes_sent + live[2],
                pushes=counts.pushes + live[3],
            )
        for meter in sorted(stats.calls(), key=lambda m: (m.route, m.transport)):
            calls = meter.calls
            reply.routes.add(
                transport=meter.transport,
                route=meter.route,
                calls=calls,
                errors=calls - meter.codes[StatusCode.OK],
                mean_seconds=meter.seconds / calls if calls else 0.0,
            )
        if self.im is not None:
            reply.im.CopyFrom(admin_pb2.ImStats(**self.im.counters()))
        return reply

    async def list_connections(
        self, request: admin_pb2.ListConnectionsRequest, context: CallContext
    ) -> admin_pb2.ListConnectionsReply:
        reply = admin_pb2.ListConnectionsReply()
        for connection, info in list(self.server.connections.items()):
            principal = connection.principal
            received, sent, _ = connection.traffic()
            reply.connections.add(
                connection_id=info.connection_id,
                transport=connection.transport_kind.value,
                peer=connection.peer,
                principal=principal.subject if principal is not None else "",
                opened_at_ms=int(info.opened_at * 1000),
                bytes_received=received,
                bytes_sent=sent,
            )
        return reply

    async def kick_connection(
        self, request: admin_pb2.KickConnectionRequest, context: CallContext
    ) -> admin_pb2.KickConnectionReply:
        for connection, info in list(self.server.connections.items()):
            if info.connection_id == request.connection_id:
                connection.close(request.reason or KICK_REASON)
                return admin_pb2.KickConnectionReply()
        raise RpcError(StatusCode.NOT_FOUND, f"no open connection {request.connection_id!r}")

    async def list_sessions(
        self, request: admin_pb2.ListSessionsRequest, context: CallContext
    ) -> admin_pb2.ListSessionsReply:
        core = self._im()
        sessions = core.sessions_of(request.user_id) if request.user_id else core.sessions()
        reply = admin_pb2.ListSessionsReply()
        for session in sessions:
            reply.sessions.add(
                session_id=session.session_id,
                user_id=session.user_id,
                device_id=session.device_id,
                platform=session.platform,
            )
        return reply

    async def kick_session(
        self, request: admin_pb2.KickSessionRequest, context: CallContext
    ) -> admin_pb2.KickSessionReply:
        if not await self._im().kick(request.session_id, request.reason or KICK_REASON):
            raise RpcError(StatusCode.NOT_FOUND, f"no session {request.session_id!r}")
        return admin_pb2.KickSessionReply()

    async def drain(
        self, request: admin_pb2.DrainRequest, context: CallContext
    ) -> admin_pb2.DrainReply:
        # After this reply has left: the drain sends GOAWAY on this connection too.
        asyncio.get_running_loop().call_soon(self.server.request_drain)
        return admin_pb2.DrainReply()

    def _im(self) -> ImCore:
        if self.im is None:
            raise RpcError(StatusCode.FAILED_PRECONDITION, "this server does not serve the IM")
        return self.im
