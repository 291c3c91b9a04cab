"""The code generator's model: what `parse` extracts and `render` prints.

Plain frozen dataclasses with every decision already taken (Python names
resolved against collisions, options resolved against service defaults,
locations looked up), so that rendering is a pure function of the model and
``flare routes`` can print the same facts without rendering anything.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Location:
    """A place in a ``.proto`` file; line and column are 1-based (0 when unknown)."""

    file: str
    line: int = 0
    column: int = 0

    def __str__(self) -> str:
        if self.line == 0:
            return self.file
        return f"{self.file}:{self.line}:{self.column}"


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One validation error, printed as ``file.proto:line:col: message``."""

    location: Location
    message: str

    def __str__(self) -> str:
        return f"{self.location}: {self.message}"


class Cardinality(enum.Enum):
    """How many messages flow each way; values name `flare_runtime.routing.Cardinality` members."""

    UNARY = "UNARY"
    SERVER_STREAM = "SERVER_STREAM"
    CLIENT_STREAM = "CLIENT_STREAM"
    BIDI_STREAM = "BIDI_STREAM"

    @property
    def client_streams(self) -> bool:
        """True when the client sends a stream of messages."""
        return self in (Cardinality.CLIENT_STREAM, Cardinality.BIDI_STREAM)

    @property
    def server_streams(self) -> bool:
        """True when the server sends a stream of messages."""
        return self in (Cardinality.SERVER_STREAM, Cardinality.BIDI_STREAM)


class Transport(enum.Enum):
    """A transport; values name `flare_runtime.routing.Transport` members."""

    WEBSOCKET = "WEBSOCKET"
    QUIC = "QUIC"
    GRPC = "GRPC"


ALL_TRANSPORTS: frozenset[Transport] = frozenset(Transport)
FLARE_WIRE_TRANSPORTS: frozenset[Transport] = frozenset({Transport.WEBSOCKET, Transport.QUIC})


class Auth(enum.Enum):
    """Resolved auth requirement; values name `flare_runtime.routing.AuthRequirement` members."""

    NONE = "NONE"
    AUTHENTICATED = "AUTHENTICATED"


@dataclass(frozen=True, slots=True)
class MessageRef:
    """A message class as generated Python code refers to it."""

    full_name: str
    """Protobuf full name without the leading dot, ``pkg.Outer.Inner``."""
    module: str
    """The ``_pb2`` module defining it, ``pkg.path.file_pb2``."""
    qualname: str
    """Attribute path inside the module, ``Outer.Inner``."""


@dataclass(frozen=True, slots=True)
class MethodOptions:
    """Flare method options resolved against the service defaults (mirrors ``RouteOptions``)."""

    idempotent: bool
    auth: Auth
    scopes: tuple[str, ...]
    default_timeout: float | None
    """Seconds."""
    transports: frozenset[Transport]
    max_message_bytes: int | None
    deprecated: bool
    deprecation_note: str


@dataclass(frozen=True, slots=True)
class Method:
    """One rpc of a service."""

    name: str
    """The rpc name as written in the schema."""
    path: str
    """gRPC path, ``/pkg.Service/Method``."""
    route_id: int
    """0 when the method has no Flare route id."""
    cardinality: Cardinality
    request: MessageRef
    response: MessageRef
    options: MethodOptions
    handler_name: str
    """Python method name on the handler base and the client (snake_case, collision-free)."""
    constant_name: str
    """Attribute name in the ``*Routes`` namespace (UPPER_CASE, collision-free)."""
    doc: str
    location: Location


@dataclass(frozen=True, slots=True)
class Service:
    """One service with its Python names."""

    name: str
    full_name: str
    service_id: int
    """0 when the service has no Flare service id (served on gRPC only)."""
    methods: tuple[Method, ...]
    reserved_route_ids: tuple[tuple[int, int], ...]
    deprecation_note: str
    doc: str
    location: Location
    base_class: str
    routes_class: str
    client_class: str
    table_constant: str
    register_function: str


@dataclass(frozen=True, slots=True)
class Push:
    """A message the server may push under a stable id."""

    type_id: int
    message: MessageRef
    location: Location


@dataclass(frozen=True, slots=True)
class File:
    """One ``.proto`` file to generate ``<name>_flare.py`` for."""

    proto_path: str
    """Path as protoc names it, ``pkg/path/file.proto``."""
    package: str
    output_path: str
    """``pkg/path/file_flare.py``, relative to the output root."""
    services: tuple[Service, ...]
    pushes: tuple[Push, ...]
