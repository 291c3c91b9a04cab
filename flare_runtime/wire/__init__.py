"""The Flare wire layer: asyncio endpoints over the sans-I/O protocol core.

What WebSocket and QUIC share (gRPC does not use it: grpcio owns its framing):

* `endpoint` — `WireTransport` (what an adapter offers: a reliable, ordered
  byte pipe) and `WireEndpoint` (bytes in, events out, one timer, batched
  output, backpressure), the half both sides share;
* `server` — `ServerEndpoint`: one client connection on a server, its calls
  run through the server's `Dispatcher`; it is the `ServerConnection` handlers
  and applications push to;
* `client` — `ClientEndpoint` and `WireChannel`, the `Channel` over it;
* `listener` — `EndpointSet`: a listener's open endpoints, drained on shutdown;
* `eager` — starting a unary handler inside the read callback.

A transport adapter (docs/transports/) only moves bytes between its socket and
one of these endpoints.
"""
