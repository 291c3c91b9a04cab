"""The servers `scale_bench` and `workers_bench` run with ``flare serve ... --workers N``.

* `server` -- the bench echo service (`bench._service`), nothing else: the
  smallest Flare server, what every idle connection costs at the least.
  Keepalive is off (`IDLE`) in both, and in ``scale_bench --im``: on the
  loaded 2-core machine the client processes, busy opening connections,
  could not always answer a ping within 20 s, and the server closed those
  connections mid-measurement; keepalive costs CPU, not memory.
* `server_with_im_imports` -- the same server in a process that has also
  imported the IM (service, PostgreSQL storage) and the cluster (Redis broker):
  what a worker of an IM deployment costs before its first connection.

IM sessions (``scale_bench --im``) are served by the IM node of the cluster
tests, `flare_runtime.testing.im_cluster.node_server`.
"""

from __future__ import annotations

import importlib

from bench._service import SERVICE, BenchService
from flare_runtime.protocol.config import ProtocolConfig
from flare_runtime.server import Server, ServerOptions

IDLE = ServerOptions(protocol=ProtocolConfig(keepalive_interval=None))
"""No keepalive: an idle connection sends nothing (the clients turn theirs off too)."""

server = Server([(SERVICE, BenchService())], options=IDLE)


IM_IMPORTS = (
    "flare_runtime.im.service",
    "flare_runtime.im.storage.postgres",
    "flare_runtime.cluster.redis_broker",
)
"""What a worker of an IM deployment imports beyond the runtime (each worker imports it:
the target, and what it imports, is the worker's own)."""


def server_with_im_imports() -> Server:
    """`server`, after importing what an IM worker on PostgreSQL and Redis imports."""
    for module in IM_IMPORTS:
        importlib.import_module(module)

    return Server([(SERVICE, BenchService())], options=IDLE)
