"""Servers the workers tests run with ``flare serve ... --workers N`` (a subprocess imports this).

`server` is the conformance service whose Echo answers ``pid`` with the
worker's process id and ``routing`` with ``pid received asked dropped``, this
worker's QUIC routing counters (`flare_runtime.transports.quic_workers`:
datagrams other workers routed to it, asks it sent, datagrams it dropped);
anything else is echoed as the conformance service does (``x-sleep``
included, for drains).
"""

from __future__ import annotations

import os

from flare_runtime.context import CallContext
from flare_runtime.server import Server
from flare_runtime.testing.service import PUSH_TYPES, SERVICE, BytesValue, ConformanceService


class WorkerService(ConformanceService):
    """The conformance handlers, plus who answered."""

    async def echo(self, request: BytesValue, context: CallContext) -> BytesValue:
        if request.value == b"pid":
            return BytesValue(value=str(os.getpid()).encode())
        if request.value == b"routing":
            from flare_runtime.transports.quic_workers import routing_stats

            stats = routing_stats()
            answer = f"{os.getpid()} {stats.received} {stats.asked} {stats.dropped}"
            return BytesValue(value=answer.encode())
        return await super().echo(request, context)


server = Server([(SERVICE, WorkerService())], push_tables=[PUSH_TYPES])


def memory_broker_server() -> Server:
    """A server whose ClusterNode uses the in-process broker: refused with --workers > 1."""
    from flare_runtime.cluster import ClusterNode

    return Server([(SERVICE, WorkerService())], parts=[ClusterNode()])


def sqlite_im_server() -> Server:
    """The IM on one SQLite file: refused with --workers > 1 (nothing is opened before)."""
    from flare_runtime.im.core import ImCore
    from flare_runtime.im.service import ImService
    from flare_runtime.im.storage import KeyRing, SqliteStorage

    core = ImCore(SqliteStorage("im.db", KeyRing({1: bytes(32)}, 1)))
    return Server([ImService(core)], push_tables=[ImService.PUSH_TYPES])
