"""Flare over a plain TCP stream (``tcp://``, and ``tcps://`` with TLS 1.3): a transport plugin.

This module is what the ``flare.transports`` entry point names, so it stays
light: it declares the transport and nothing else. The registry imports the
adapter (`flare_tcp.transport`) the first time a server listens on ``tcp`` or
a client connects to a ``tcp://`` URL::

    await server.start(listen={"tcp": "0.0.0.0:9000"})
    async with flare.connect("tcp://localhost:9000") as channel: ...

The conformance suite runs on it through the default harness (127.0.0.1,
port 0, no TLS): the spec names no harness of its own.
"""

from __future__ import annotations

from flare_runtime.transports import TransportSpec

TRANSPORT = TransportSpec(
    "tcp",
    scheme="tcp",
    tls_scheme="tcps",
    listener="flare_tcp.transport:start_listener",
    channel="flare_tcp.transport:open_channel",
)
"""The transport's one declaration, found through the ``flare.transports`` entry point."""
