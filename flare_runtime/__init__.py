"""Flare runtime: serve generated handlers over WebSocket, QUIC and gRPC.

Import it as ``import flare_runtime as flare``. The names below load on first
use (PEP 562), so importing one submodule (``flare_runtime.routing``, the
``flare`` command line) does not first import every transport, JWT and
cryptography.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flare_runtime.auth import AuthPlugin, JWTAuth, Principal, TokenAuth
    from flare_runtime.client import BidiStreamCall, Channel, ServerStreamCall, connect
    from flare_runtime.context import CallContext
    from flare_runtime.errors import (
        ConfigurationError,
        ConnectionClosedError,
        FlareError,
        LocalProtocolError,
        ProtocolError,
        RemoteProtocolError,
        RpcError,
    )
    from flare_runtime.interceptors import ClientCallInfo, ClientInterceptor, ServerInterceptor
    from flare_runtime.metadata import Metadata
    from flare_runtime.reconnect import Backoff, ChannelState, ReconnectingChannel, reconnecting
    from flare_runtime.routing import (
        Cardinality,
        PushTable,
        Route,
        Router,
        ServiceRoutes,
        Transport,
    )
    from flare_runtime.server import Server, ServerOptions, TLSFiles
    from flare_runtime.server_connection import PreparedPush, ServerConnection
    from flare_runtime.status import StatusCode

__version__ = "0.1.0"

__all__ = [
    "AuthPlugin",
    "Backoff",
    "BidiStreamCall",
    "CallContext",
    "Cardinality",
    "Channel",
    "ChannelState",
    "ClientCallInfo",
    "ClientInterceptor",
    "ConfigurationError",
    "ConnectionClosedError",
    "FlareError",
    "JWTAuth",
    "LocalProtocolError",
    "Metadata",
    "PreparedPush",
    "Principal",
    "ProtocolError",
    "PushTable",
    "ReconnectingChannel",
    "RemoteProtocolError",
    "Route",
    "Router",
    "RpcError",
    "Server",
    "ServerConnection",
    "ServerInterceptor",
    "ServerOptions",
    "ServerStreamCall",
    "ServiceRoutes",
    "StatusCode",
    "TLSFiles",
    "TokenAuth",
    "Transport",
    "__version__",
    "connect",
    "reconnecting",
]

_EXPORTS: dict[str, str] = {
    "AuthPlugin": "auth",
    "JWTAuth": "auth",
    "TokenAuth": "auth",
    "BidiStreamCall": "client",
    "Channel": "client",
    "ServerStreamCall": "client",
    "connect": "client",
    "Principal": "auth",
    "PreparedPush": "server_connection",
    "Backoff": "reconnect",
    "ChannelState": "reconnect",
    "ReconnectingChannel": "reconnect",
    "reconnecting": "reconnect",
    "ServerConnection": "server_connection",
    "CallContext": "context",
    "ConfigurationError": "errors",
    "ConnectionClosedError": "errors",
    "FlareError": "errors",
    "LocalProtocolError": "errors",
    "ProtocolError": "errors",
    "RemoteProtocolError": "errors",
    "RpcError": "errors",
    "ClientCallInfo": "interceptors",
    "ClientInterceptor": "interceptors",
    "ServerInterceptor": "interceptors",
    "Metadata": "metadata",
    "Cardinality": "routing",
    "PushTable": "routing",
    "Route": "routing",
    "Router": "routing",
    "ServiceRoutes": "routing",
    "Transport": "routing",
    "Server": "server",
    "ServerOptions": "server",
    "TLSFiles": "server",
    "StatusCode": "status",
}
"""Each public name and the submodule defining it (``__all__`` lists the same names)."""


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'flare_runtime' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"flare_runtime.{module}"), name)
    globals()[name] = value  # later lookups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
