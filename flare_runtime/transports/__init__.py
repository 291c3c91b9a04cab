"""Transport adapters, one small module per transport, and the registry that names them.

* `registry` -- `TransportSpec`, the one declaration a transport makes (name,
  URL schemes, listener, channel, conformance harness); the built-in ones and
  the ``flare.transports`` entry points of installed plugins.
* `websocket`, `quic` (+ `quic_link`, `quic_certs`, `quic_tickets`,
  `quic_early_data`) -- the Flare wire protocol over a byte pipe
  (`flare_runtime.wire`).
* `grpc_server`, `grpc_client` (+ `grpc_errors`, `grpc_testing`) -- native
  gRPC through grpcio.

Importing this package imports no transport module; the registry imports
each on first use. docs/transports/writing-a-transport.md shows how to add one.
"""

from __future__ import annotations

from flare_runtime.transport_registry import (
    ENTRY_POINT_GROUP,
    TransportSpec,
    get_transport,
    register_transport,
)

__all__ = ["ENTRY_POINT_GROUP", "TransportSpec", "get_transport", "register_transport"]
