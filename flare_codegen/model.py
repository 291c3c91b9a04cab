"""The code generator's model: what `parse` extracts and `render` prints.

Plain frozen dataclasses with every decision already taken (Python names
resolved against collisions, options resolved against service defaults,
locations looked up), so that rendering is a pure function of the model and
``flare routes`` can print the same facts without rendering anything.

Cardinalities, transports and auth requirements are the runtime's own enums
(`flare_runtime.routing`): generated code names their members, so there is one
definition. Importing `flare_runtime.routing` loads neither the transports nor
the server (`flare_runtime` loads its exports lazily).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from flare_runtime.routing import ALL_TRANSPORTS, AuthRequirement, Cardinality, Transport


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


FLARE_WIRE_TRANSPORTS: frozenset[Transport] = frozenset({Transport.WEBSOCKET, Transport.QUIC})
"""The transports that carry routes by wire id (WebSocket and QUIC)."""


# The enum numbers of flare/options/v1/options.proto, kept here so that code
# without the generated options module (`flare schema check` from a wheel)
# resolves options as the generator does; tests check them against options_pb2.
TRANSPORT_BY_OPTION: dict[int, Transport] = {
    1: Transport.WEBSOCKET,
    2: Transport.QUIC,
    3: Transport.GRPC,
}
"""``flare.options.v1.Transport`` numbers to transports (0, unspecified, is none)."""

AUTH_BY_OPTION: dict[int, AuthRequirement] = {
    1: AuthRequirement.NONE,
    2: AuthRequirement.AUTHENTICATED,
}
"""``flare.options.v1.AuthRequirement`` numbers to requirements (0, unspecified, is none)."""


def auth_from_option(value: int) -> AuthRequirement | None:
    """The requirement a ``flare.options.v1.AuthRequirement`` number sets; None when unset (0).

    A number the enum does not define (``auth: 7``) fails closed: it reads as
    AUTHENTICATED. The plugin reports it as an error; schema CI compares it
    as the strictest requirement rather than as no requirement.
    """
    if value == 0:
        return None
    return AUTH_BY_OPTION.get(value, AuthRequirement.AUTHENTICATED)


def transports_when_unlisted(has_service_id: bool) -> frozenset[Transport]:
    """Where a method is served when neither it nor its service lists transports.

    Everywhere for a service with a Flare service id; gRPC only without one
    (a plain gRPC service, e.g. from googleapis). docs/options/transports.md.
    """
    return ALL_TRANSPORTS if has_service_id else frozenset({Transport.GRPC})


def resolve_auth(
    method_auth: AuthRequirement | None,
    method_scopes: Sequence[str],
    default_auth: AuthRequirement | None,
    default_scopes: Sequence[str],
) -> tuple[AuthRequirement, tuple[str, ...]]:
    """A method's auth requirement and scopes once its service's defaults are inherited.

    docs/options/auth.md's order: the method's own AUTH_REQUIREMENT_NONE wins
    (no scopes); then its own scopes; then its AUTHENTICATED, with the
    service's default scopes; else the service's default_auth -- when unset,
    authenticated exactly when the service lists default scopes -- with those
    scopes if it is authenticated.
    """
    if method_auth is AuthRequirement.NONE:
        return AuthRequirement.NONE, ()
    if method_scopes:
        return AuthRequirement.AUTHENTICATED, tuple(method_scopes)
    if method_auth is AuthRequirement.AUTHENTICATED:
        return AuthRequirement.AUTHENTICATED, tuple(default_scopes)
    if default_auth is None:
        default_auth = AuthRequirement.AUTHENTICATED if default_scopes else AuthRequirement.NONE
    if default_auth is AuthRequirement.AUTHENTICATED:
        return AuthRequirement.AUTHENTICATED, tuple(default_scopes)
    return AuthRequirement.NONE, ()


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
    auth: AuthRequirement
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
    constant_name: str
    """The module-level ``PushType`` constant: ``<UPPER_SNAKE_NAME>_PUSH``, collision-free."""


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
