"""The servers `scale_bench` and `workers_bench` run with ``flare serve ... --workers N``.

* `server` -- the bench echo service (`bench._service`), nothing else: the
  smallest Flare server, what every idle connection costs at the least.
  Keepalive is off (`IDLE`) in all three: on the loaded 2-core machine the
  client processes, busy opening connections, could not always answer a ping
  within 20 s, and the server closed those connections mid-measurement;
  keepalive costs CPU, not memory.
* `server_with_im_imports` -- the same server in a process that has also
  imported the IM (service, PostgreSQL storage) and the cluster (Redis broker):
  what a worker of an IM deployment costs before its first connection.
* `im_server` -- an async factory: the IM (`ImService` on `PostgresStorage`,
  DSN in ``FLARE_SCALE_PG``, schema ``flare_scale_bench``) trusting any bearer
  token as its user's name, for ``scale_bench --im`` (every connection logs
  in). Where `ImCore` takes ``cluster=``, each worker is a node on the Redis at
  ``FLARE_SCALE_REDIS``, and any number of workers may serve it; otherwise
  the supervisor refuses more than one (`ImCore.process_sharing_problem`).
"""

from __future__ import annotations

import importlib
import inspect
import os

from bench._service import SERVICE, BenchService
from flare_runtime.auth import AuthPlugin, Principal, bearer_token
from flare_runtime.metadata import Metadata
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


class NameAuth(AuthPlugin):
    """Any bearer token is its user's name (a bench has no secrets to keep)."""

    async def authenticate(self, metadata: Metadata, peer: str) -> Principal | None:
        token = bearer_token(metadata)
        return Principal(token) if token else None


async def im_server() -> Server:
    """The IM on PostgreSQL (``FLARE_SCALE_PG``), any bearer token accepted as the user id."""
    from flare_runtime.im.core import ImCore  # noqa: PLC0415 -- only --im pays for the IM
    from flare_runtime.im.service import ImService  # noqa: PLC0415 -- only --im pays for the IM
    from flare_runtime.im.storage import KeyRing  # noqa: PLC0415 -- only --im pays for the IM
    from flare_runtime.im.storage.postgres import PostgresStorage  # noqa: PLC0415 -- only --im pays for the IM

    dsn = os.environ.get("FLARE_SCALE_PG", "postgresql://flare:flare@127.0.0.1:55432/flare_test")
    storage = PostgresStorage(dsn, KeyRing({1: bytes(32)}, 1), schema="flare_scale_bench")
    if "cluster" in inspect.signature(ImCore).parameters:
        # The IM on the cluster: every worker a node on the same Redis, so the
        # supervisor lets --workers above 1 serve it.
        from flare_runtime.cluster import ClusterNode  # noqa: PLC0415
        from flare_runtime.cluster.redis_broker import RedisBroker  # noqa: PLC0415

        redis = os.environ.get("FLARE_SCALE_REDIS", "redis://127.0.0.1:6379/0")
        core = ImCore(storage, cluster=ClusterNode(RedisBroker(redis)))  # type: ignore[call-arg,unused-ignore]
    else:
        core = ImCore(storage)
    await core.start()
    return Server(
        [ImService(core)],
        auth=NameAuth(),
        push_tables=[ImService.PUSH_TYPES],
        options=IDLE,
        parts=[core],
    )
