"""The transport registry: the one place a transport declares itself.

A transport is a `TransportSpec`: its name (what ``Server.start(listen={name:
address})`` and ``Server.port(name)`` use), the URL schemes
`flare_runtime.connect` picks it by, and references to its code, each an
object or a ``"module:attribute"`` string imported on first use (so an unused
transport costs nothing, and ``import flare_runtime`` imports no transport):

* ``listener``: ``async def start_listener(server, address, *, tls) -> Listener``
  (`flare_runtime.server.Listener`), what `Server.start` calls;
* ``channel``: ``async def open_channel(url, options: ConnectOptions) -> Channel``,
  what `flare_runtime.connect` calls;
* ``harness`` (optional): ``def harness() -> Harness``, how the conformance
  suite serves and reaches the transport (`flare_runtime.testing.harness`);
  without one the suite listens on ``127.0.0.1:0`` without TLS and connects
  to ``<scheme>://127.0.0.1:<port>``.

The built-in transports (websocket, quic, grpc) are declared in `BUILT_IN`.
Other distributions declare theirs as Python entry points in the
``flare.transports`` group (`ENTRY_POINT_GROUP`), named by the transport and
pointing at its `TransportSpec`::

    [project.entry-points."flare.transports"]
    tcp = "flare_tcp:TRANSPORT"

Entry points are read on first need -- a name or a URL scheme that is not
built in, or a listing of every transport -- never at import. A plugin that
cannot be loaded (its module fails to import, its object is not a
`TransportSpec`, its name or schemes clash with another transport) is a
one-line `ConfigurationError` naming the plugin when it is asked for, and a
logged warning when it only stood beside the one asked for.
docs/transports/writing-a-transport.md is the guide.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flare_runtime.errors import ConfigurationError

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

logger = logging.getLogger("flare_runtime.transports")

ENTRY_POINT_GROUP = "flare.transports"
"""The entry-point group third-party transports register in."""

Reference = str | Callable[..., Any]
"""A ``"module:attribute"`` string, imported on first use, or the object itself.

The registry imports nothing of what it names, so it sits below `server`,
`client` and `testing`; they give the loaded objects their types
(`flare_runtime.server.ListenerStarter`, `flare_runtime.client.ChannelOpener`).
"""


@dataclass(frozen=True, slots=True)
class TransportSpec:
    """How Flare serves and reaches one transport (see the module docstring)."""

    name: str
    """What ``Server.start(listen={name: address})`` and ``Server.port(name)`` use."""
    scheme: str
    """URL scheme of a connection without TLS, or of every connection where TLS is
    not optional (``quic``)."""
    listener: Reference
    """``start_listener`` (see the module docstring)."""
    channel: Reference
    """``open_channel`` (see the module docstring)."""
    tls_scheme: str | None = None
    """URL scheme of a TLS connection (``wss``, ``grpcs``); None where it has none of its own."""
    harness: Reference | None = None
    """The conformance harness factory; None for the default harness (the module docstring)."""
    requires: tuple[str, str] | None = None
    """(top-level module, what to install) of the library the transport's code needs when
    that is an optional dependency: loading it without the library is then a one-line
    `ConfigurationError` saying what to install (``("aioquic", "flare-rpc[quic]")``)."""
    shared_port: str | None = None
    """How worker processes (``flare serve --workers N``) share the port, when they can:

    * ``"tcp"``: the supervisor reserves the port; each worker's listener binds it
      with ``SO_REUSEPORT`` when ``server.shared_ports`` is set;
    * ``"udp"``: the supervisor binds one ``SO_REUSEPORT`` UDP socket per worker,
      and the listener serves on ``server.shared_ports.sockets[name]``;
    * None: it cannot be shared, and ``--workers`` above 1 is refused.
    """

    @property
    def schemes(self) -> tuple[str, ...]:
        """Every URL scheme `flare_runtime.connect` routes to this transport."""
        if self.tls_scheme is None or self.tls_scheme == self.scheme:
            return (self.scheme,)
        return (self.scheme, self.tls_scheme)

    def url_scheme(self, *, secure: bool) -> str:
        """The scheme of a URL reaching a listener served with (`secure`) or without TLS."""
        return self.tls_scheme if secure and self.tls_scheme else self.scheme

    def load_listener(self) -> Callable[..., Any]:
        """The ``start_listener`` function (imports its module on first use)."""
        return _resolve(self, self.listener, "listener")

    def load_channel(self) -> Callable[..., Any]:
        """The ``open_channel`` function (imports its module on first use)."""
        return _resolve(self, self.channel, "channel")

    def load_harness(self) -> Callable[..., Any] | None:
        """The conformance harness factory, or None for the default harness."""
        return None if self.harness is None else _resolve(self, self.harness, "harness")


def _resolve(spec: TransportSpec, reference: Reference, role: str) -> Callable[..., Any]:
    """The object `reference` names (``"module:attribute"``), or `reference` itself."""
    if not isinstance(reference, str):
        return reference
    module_name, _, attribute = reference.partition(":")
    try:
        value: Any = importlib.import_module(module_name)
        for part in attribute.split(".") if attribute else ():
            value = getattr(value, part)
    except ModuleNotFoundError as error:
        if spec.requires is not None and (error.name or "").partition(".")[0] == spec.requires[0]:
            module, install = spec.requires
            raise ConfigurationError(
                f"transport {spec.name!r} needs {module}, which is not installed: "
                f"pip install '{install}'"
            ) from None
        raise ConfigurationError(
            f"transport {spec.name!r}: cannot load its {role} {reference!r}: "
            f"{type(error).__name__}: {error}"
        ) from None
    except Exception as error:  # a plugin's import may raise anything
        raise ConfigurationError(
            f"transport {spec.name!r}: cannot load its {role} {reference!r}: "
            f"{type(error).__name__}: {error}"
        ) from None
    if not callable(value):
        raise ConfigurationError(f"transport {spec.name!r}: {role} {reference!r} is not callable")
    resolved: Callable[..., Any] = value
    return resolved


BUILT_IN: tuple[TransportSpec, ...] = (
    TransportSpec(
        "websocket",
        scheme="ws",
        tls_scheme="wss",
        listener="flare_runtime.transports.websocket:start_listener",
        channel="flare_runtime.transports.websocket:open_channel",
        shared_port="tcp",
    ),
    TransportSpec(
        "quic",
        scheme="quic",
        listener="flare_runtime.transports.quic:start_listener",
        channel="flare_runtime.transports.quic:open_channel",
        harness="flare_runtime.testing.quic_harness:harness",
        requires=("aioquic", "flare-rpc[quic]"),
        shared_port="udp",
    ),
    TransportSpec(
        "grpc",
        scheme="grpc",
        tls_scheme="grpcs",
        listener="flare_runtime.transports.grpc_server:start_listener",
        channel="flare_runtime.transports.grpc_client:open_channel",
        harness="flare_runtime.testing.grpc_harness:harness",
        shared_port="tcp",
    ),
    TransportSpec(
        "webtransport",
        scheme="webtransport",
        listener="flare_runtime.transports.webtransport:start_listener",
        channel="flare_runtime.transports.webtransport:open_channel",
        harness="flare_runtime.testing.webtransport_harness:harness",
        requires=("aioquic", "flare-rpc[quic]"),
    ),
)
"""Flare's own transports, declared exactly as a plugin declares one."""


class TransportRegistry:
    """Transports by name and by URL scheme: built-ins, registered ones, then entry points.

    `flare_runtime.server.Server` and `flare_runtime.connect` use `REGISTRY`;
    a separate instance is for tests of the registry itself.
    """

    def __init__(
        self,
        built_in: Iterable[TransportSpec] = BUILT_IN,
        *,
        group: str | None = ENTRY_POINT_GROUP,
    ) -> None:
        self._group = group
        self._specs: dict[str, TransportSpec] = {}
        self._origins: dict[str, str] = {}
        self._schemes: dict[str, str] = {}
        self._entry_points: dict[str, list[EntryPoint]] | None = None
        self._broken: dict[str, ConfigurationError] = {}
        self._loaded_plugins: set[str] = set()
        for spec in built_in:
            self._add(spec, "built in")

    # ---------------------------------------------------------------- declaring

    def register(self, spec: TransportSpec) -> None:
        """Add `spec` from code (an application's own transport, a test).

        Raises `ConfigurationError` if its name or a scheme is taken.
        """
        self._add(spec, "registered")

    def _add(self, spec: TransportSpec, origin: str) -> None:
        if not isinstance(spec, TransportSpec):
            raise ConfigurationError(f"{origin}: {spec!r} is not a TransportSpec")
        if spec.name in self._specs:
            raise ConfigurationError(
                f"transport {spec.name!r} ({origin}) is already declared "
                f"({self._origins[spec.name]})"
            )
        for scheme in spec.schemes:
            owner = self._schemes.get(scheme)
            if owner is not None:
                raise ConfigurationError(
                    f"transport {spec.name!r} ({origin}) claims URL scheme {scheme}://, "
                    f"which is transport {owner!r}'s"
                )
        self._specs[spec.name] = spec
        self._origins[spec.name] = origin
        for scheme in spec.schemes:
            self._schemes[scheme] = spec.name

    # ---------------------------------------------------------------- looking up

    def get(self, name: str) -> TransportSpec:
        """The transport called `name`; `ConfigurationError` if none is or its plugin is broken."""
        spec = self._specs.get(name)
        if spec is not None:
            return spec
        if name in self._plugin_entry_points():
            self._load_plugin(name)
            return self._specs[name]
        raise ConfigurationError(
            f"unknown transport {name!r}: known transports are {', '.join(self.names())}"
        )

    def for_scheme(self, scheme: str) -> TransportSpec:
        """The transport `flare_runtime.connect` uses for URLs with `scheme`."""
        name = self._schemes.get(scheme)
        if name is None:
            self._load_every_plugin(needed=False)
            name = self._schemes.get(scheme)
        if name is None:
            known = ", ".join(f"{known}://" for known in self._schemes)
            broken = "".join(f"; {error}" for error in self._broken.values())
            raise ConfigurationError(
                f"unsupported URL scheme {scheme}://: use one of {known}{broken}"
            )
        return self._specs[name]

    def names(self) -> list[str]:
        """Every transport's name, plugins' included, without loading any plugin."""
        return sorted({*self._specs, *self._plugin_entry_points()})

    def specs(self) -> list[TransportSpec]:
        """Every transport, loading every plugin; the first broken one raises."""
        self._load_every_plugin(needed=True)
        return [self._specs[name] for name in sorted(self._specs)]

    def origin(self, name: str) -> str:
        """Where transport `name` was declared: built in, registered, or its entry point."""
        self.get(name)
        return self._origins[name]

    # ---------------------------------------------------------------- plugins

    def _plugin_entry_points(self) -> dict[str, list[EntryPoint]]:
        if self._entry_points is None:
            found: dict[str, list[EntryPoint]] = {}
            if self._group is not None:
                # Imported here: importlib.metadata costs milliseconds that
                # `import flare_runtime` should not pay.
                from importlib.metadata import entry_points  # noqa: PLC0415

                for entry_point in entry_points(group=self._group):
                    same = found.setdefault(entry_point.name, [])
                    # A distribution seen twice on sys.path is one plugin.
                    if all(seen.value != entry_point.value for seen in same):
                        same.append(entry_point)
            self._entry_points = found
        return self._entry_points

    def _load_every_plugin(self, *, needed: bool) -> None:
        for name in self._plugin_entry_points():
            if name in self._loaded_plugins:
                continue
            newly_broken = name not in self._broken
            try:
                self._load_plugin(name)
            except ConfigurationError as error:
                if needed:
                    raise
                if newly_broken:
                    logger.warning("%s", error)

    def _load_plugin(self, name: str) -> None:
        broken = self._broken.get(name)
        if broken is not None:
            raise broken
        try:
            spec, origin = self._spec_of_plugin(name)
            self._add(spec, f"plugin {origin}")
        except ConfigurationError as error:
            self._broken[name] = error
            raise
        self._loaded_plugins.add(name)

    def _spec_of_plugin(self, name: str) -> tuple[TransportSpec, str]:
        entry_points = self._plugin_entry_points()[name]
        if len(entry_points) > 1:
            described = " and ".join(_describe(entry_point) for entry_point in entry_points)
            raise ConfigurationError(f"transport plugin {name!r} is declared twice: {described}")
        origin = _describe(entry_points[0])
        try:
            spec = entry_points[0].load()
        except Exception as error:  # a plugin's import may raise anything
            raise ConfigurationError(
                f"transport plugin {name!r} ({origin}) failed to load: "
                f"{type(error).__name__}: {error}"
            ) from None
        if not isinstance(spec, TransportSpec):
            raise ConfigurationError(
                f"transport plugin {name!r} ({origin}) is not a TransportSpec "
                f"but a {type(spec).__name__}"
            )
        if spec.name != name:
            raise ConfigurationError(
                f"transport plugin {name!r} ({origin}) declares a transport named "
                f"{spec.name!r}: the entry point must carry the transport's name"
            )
        return spec, origin


def _describe(entry_point: EntryPoint) -> str:
    """``entry point flare_tcp:TRANSPORT of flare-tcp-transport 0.1.0``."""
    distribution = entry_point.dist
    where = f" of {distribution.name} {distribution.version}" if distribution is not None else ""
    return f"entry point {entry_point.value}{where}"


REGISTRY = TransportRegistry()
"""The registry `Server` and `connect` use."""


def register_transport(spec: TransportSpec) -> None:
    """Declare a transport from code (what an entry point does for a distribution).

    Raises `ConfigurationError` if its name or one of its schemes is taken.
    """
    REGISTRY.register(spec)


def get_transport(name: str) -> TransportSpec:
    """The transport called `name` (built in, registered or a plugin)."""
    return REGISTRY.get(name)
