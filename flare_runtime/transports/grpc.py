"""The gRPC transport: what `flare_runtime.Server` and `flare_runtime.connect` plug in.

* Server side, ``Server.serve(grpc="host:port")`` (or ``flare serve … --grpc
  :50051``) calls `grpc_server.start_listener`, which serves the server's one `Dispatcher`
  with a `GrpcServer` (grpcio's asyncio server, health and reflection
  included). See `flare_runtime.transports.grpc_server`.
* Client side, ``flare_runtime.connect("grpc://host:port")`` or
  ``"grpcs://…"`` calls `grpc_client.open_channel`, which opens a `GrpcChannel`. See
  `flare_runtime.transports.grpc_client`.

Unlike WebSocket and QUIC, gRPC carries no Flare wire protocol: grpcio owns
HTTP/2 and message framing, and a stock gRPC peer cannot tell Flare is there.
docs/transports/grpc.md lists what gRPC cannot do (server pushes outside a
call, connection-level authentication).
"""

from __future__ import annotations

from flare_runtime.transports.grpc_client import (
    GrpcChannel,
    PemSource,
    connect_grpc,
    open_channel,
    parse_grpc_url,
    tls_credentials,
)
from flare_runtime.transports.grpc_server import (
    GrpcListener,
    GrpcServer,
    GrpcTls,
    start_listener,
)

__all__ = [
    "GrpcChannel",
    "GrpcListener",
    "GrpcServer",
    "GrpcTls",
    "PemSource",
    "connect_grpc",
    "open_channel",
    "parse_grpc_url",
    "start_listener",
    "tls_credentials",
]
