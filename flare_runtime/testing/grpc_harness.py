"""The gRPC harness of the conformance suite (`flare_runtime.testing.conformance`).

gRPC lacks two things the Flare wire protocol has, and says so here so the
suite skips those tests by name (docs/transports/grpc.md lists them):

* **server push** outside a call: gRPC has no server-initiated messages; use a
  server-streaming call instead;
* **connection-level authentication**: gRPC has no connection metadata, so the
  token given to ``connect`` is sent as ``authorization`` on every call.

One setting differs from a default channel: HTTP/2 BDP probing is off, so the
flow-control window stays at its static 64 KiB and the suite's slow-reader
bound (fewer than 64 chunks of 64 KiB sent to a client that stopped reading)
applies as written. With probing on (the default, and right for real networks)
grpcio auto-tunes the window to several MB on loopback: still a bound, a larger
one; tests/runtime/transports/test_grpc_client.py checks that one.
"""

from __future__ import annotations

from flare_runtime.server import Server
from flare_runtime.testing.harness import Harness


async def _start_grpc(server: Server) -> str:
    await server.start(grpc="127.0.0.1:0")
    return f"grpc://127.0.0.1:{server.port('grpc')}"


def harness() -> Harness:
    """The gRPC harness (named by the grpc `TransportSpec`)."""
    return Harness(
        "grpc",
        _start_grpc,
        supports_push=False,
        supports_connection_auth=False,
        connect_options={"grpc_options": [("grpc.http2.bdp_probe", 0)]},
    )
