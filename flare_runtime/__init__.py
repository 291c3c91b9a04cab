"""Flare runtime: serve generated handlers over WebSocket, QUIC and gRPC.

Import it as ``import flare_runtime as flare``.
"""

from __future__ import annotations

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
from flare_runtime.routing import Cardinality, PushTable, Route, Router, ServiceRoutes, Transport
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
