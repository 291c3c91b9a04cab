"""Routing tables and the `Router` that dispatches calls to handlers.

Generated `*_flare.py` modules declare one `ServiceRoutes` per service and one
`PushTable` per file: plain frozen data, no behaviour. The runtime builds a
`Router` from them; every transport looks calls up in the same `Router`.

A route is named two ways:

* its gRPC path, ``/package.Service/Method`` (what gRPC carries), and
* its wire id, ``wire_id(service_id, route_id)`` = ``service_id << 16 | route_id``
  (what WebSocket and QUIC frames carry, see docs/wire-format.md). Methods
  without Flare ids have no wire id and are served on gRPC only.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from google.protobuf.message import Message

from flare_runtime.errors import ConfigurationError

RequestT = TypeVar("RequestT", bound=Message)
ResponseT = TypeVar("ResponseT", bound=Message)


class Cardinality(enum.Enum):
    """The shape of a call: how many messages flow each way."""

    UNARY = "unary"
    SERVER_STREAM = "server_stream"
    CLIENT_STREAM = "client_stream"
    BIDI_STREAM = "bidi_stream"

    @property
    def client_streams(self) -> bool:
        """True when the client sends a stream of messages."""
        return self in (Cardinality.CLIENT_STREAM, Cardinality.BIDI_STREAM)

    @property
    def server_streams(self) -> bool:
        """True when the server sends a stream of messages."""
        return self in (Cardinality.SERVER_STREAM, Cardinality.BIDI_STREAM)


class Transport(enum.Enum):
    """A transport a route may be served on (`flare.options.v1.Transport`)."""

    WEBSOCKET = "websocket"
    QUIC = "quic"
    GRPC = "grpc"


class AuthRequirement(enum.Enum):
    """Who may call a route, after service defaults are applied."""

    NONE = "none"
    AUTHENTICATED = "authenticated"


ALL_TRANSPORTS: frozenset[Transport] = frozenset(Transport)


def wire_id(service_id: int, route_id: int) -> int:
    """The 32-bit id WebSocket and QUIC frames carry for a route: ``service_id << 16 | route_id``.

    `service_id` is the service's 16-bit Flare id and `route_id` the method's
    16-bit id within it (docs/wire-format.md). 0 when either is 0: such a
    route has no wire id and is served on gRPC only. The one place the
    formula is written; the code generator uses it too.
    """
    if service_id == 0 or route_id == 0:
        return 0
    return service_id << 16 | route_id


def split_wire_id(wire_id: int) -> tuple[int, int]:
    """The ``(service_id, route_id)`` a wire id names: the inverse of `wire_id`."""
    return wire_id >> 16, wire_id & 0xFFFF


@dataclass(frozen=True, slots=True)
class RouteOptions:
    """Flare method options, resolved against the service defaults.

    Generated code fills every field, so a route never needs its service to
    interpret its options.
    """

    idempotent: bool = False
    auth: AuthRequirement = AuthRequirement.NONE
    scopes: tuple[str, ...] = ()
    default_timeout: float | None = None
    """Seconds; applied when the caller sets no deadline."""
    transports: frozenset[Transport] = ALL_TRANSPORTS
    max_message_bytes: int | None = None
    deprecated: bool = False
    deprecation_note: str = ""


@dataclass(frozen=True, slots=True)
class Route(Generic[RequestT, ResponseT]):
    """One method of a service, as generated from the schema."""

    path: str
    """gRPC path, ``/package.Service/Method``."""
    service_id: int
    """Flare service id, 0 when the service has none."""
    route_id: int
    """Flare route id within the service, 0 when the method has none."""
    cardinality: Cardinality
    request_type: type[RequestT]
    response_type: type[ResponseT]
    handler_name: str
    """Name of the Python method implementing the route on a handler object."""
    options: RouteOptions = field(default_factory=RouteOptions)

    @property
    def wire_id(self) -> int:
        """The route's 32-bit wire id (`wire_id`); 0 when the route has no Flare ids."""
        return wire_id(self.service_id, self.route_id)


@dataclass(frozen=True, slots=True)
class ServiceRoutes:
    """The routing table of one service."""

    name: str
    """Fully qualified service name, ``package.Service``."""
    service_id: int
    routes: tuple[Route[Any, Any], ...]
    reserved_route_ids: tuple[tuple[int, int], ...] = ()
    """Inclusive ranges of route ids that must never be reused."""


@dataclass(frozen=True, slots=True)
class PushType(Generic[ResponseT]):
    """A message the server may push unsolicited, under a stable id."""

    type_id: int
    message_type: type[ResponseT]


@dataclass(frozen=True, slots=True)
class PushTable:
    """Push type ids of one schema file."""

    types: tuple[PushType[Any], ...] = ()

    def by_id(self) -> Mapping[int, type[Message]]:
        """Map push type id to message class."""
        return {push.type_id: push.message_type for push in self.types}


@dataclass(frozen=True, slots=True)
class BoundRoute:
    """A route bound to the handler that implements it."""

    route: Route[Any, Any]
    handler: Any
    """The bound method of the implementation (signature by cardinality)."""


class Router:
    """Maps wire ids and gRPC paths to bound handlers.

    Build one with `add_service` (generated ``register_*`` functions call it)
    before serving; lookups are then plain dict reads.
    """

    def __init__(self) -> None:
        self._by_path: dict[str, BoundRoute] = {}
        self._by_wire_id: dict[int, BoundRoute] = {}
        self._services: dict[str, ServiceRoutes] = {}
        self._push_types: dict[int, type[Message]] = {}
        self._push_ids: dict[str, int] = {}

    def add_service(self, service: ServiceRoutes, implementation: object) -> None:
        """Bind every route of `service` to the same-named method of `implementation`.

        Raises `ConfigurationError` when the service is already bound, a
        handler method is missing, or a wire id collides with another service.
        """
        if service.name in self._services:
            raise ConfigurationError(f"service {service.name} is already registered")
        bound: list[BoundRoute] = []
        for route in service.routes:
            handler = getattr(implementation, route.handler_name, None)
            if handler is None or not callable(handler):
                raise ConfigurationError(
                    f"{type(implementation).__name__} has no handler {route.handler_name!r} "
                    f"for {route.path}"
                )
            if route.wire_id and route.wire_id in self._by_wire_id:
                other = self._by_wire_id[route.wire_id].route.path
                raise ConfigurationError(
                    f"{route.path} and {other} share wire id {route.service_id}:{route.route_id}"
                )
            bound.append(BoundRoute(route, handler))
        self._services[service.name] = service
        for entry in bound:
            self._by_path[entry.route.path] = entry
            if entry.route.wire_id:
                self._by_wire_id[entry.route.wire_id] = entry

    def add_push_types(self, table: PushTable) -> None:
        """Register the push types of a schema file (idempotent for the same table)."""
        for push in table.types:
            known = self._push_types.get(push.type_id)
            if known is not None and known is not push.message_type:
                raise ConfigurationError(
                    f"push type id {push.type_id} is used by {known.DESCRIPTOR.full_name} "
                    f"and {push.message_type.DESCRIPTOR.full_name}"
                )
            self._push_types[push.type_id] = push.message_type
            self._push_ids[push.message_type.DESCRIPTOR.full_name] = push.type_id

    def by_path(self, path: str) -> BoundRoute | None:
        """The route served at gRPC path `path`, if any."""
        return self._by_path.get(path)

    def by_wire_id(self, wire_id: int) -> BoundRoute | None:
        """The route with wire id `wire_id`, if any."""
        return self._by_wire_id.get(wire_id)

    def push_type_id(self, message: Message) -> int | None:
        """The push type id registered for `message`'s type, if any."""
        return self._push_ids.get(message.DESCRIPTOR.full_name)

    def push_types(self) -> Mapping[int, type[Message]]:
        """Every registered push type id with its message class."""
        return self._push_types

    def push_type(self, type_id: int) -> type[Message] | None:
        """The message class registered under push type id `type_id`, if any."""
        return self._push_types.get(type_id)

    @property
    def services(self) -> Mapping[str, ServiceRoutes]:
        """Registered services by full name."""
        return self._services

    def routes(self) -> Iterable[BoundRoute]:
        """Every bound route, in registration order."""
        return self._by_path.values()
