"""What `flare serve` serves: its TARGET loaded into a `Server`, and its listeners' URLs.

Shared by the command (one process) and by each worker process of
``flare serve --workers N``, which loads the target itself.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

from flare_runtime.errors import ConfigurationError
from flare_runtime.server import Server
from flare_runtime.transport_registry import get_transport


def load_server(target: str) -> Server | Awaitable[Any]:
    """Import ``module:attr`` (cwd and ./generated on sys.path); return the Server.

    A callable is called; an async one's awaitable is returned as it is, for
    `resolve_server` to await in the loop that serves.
    """

    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise ConfigurationError(f"expected module:attr, got {target!r}")
    for path in (Path.cwd() / "generated", Path.cwd()):
        if path.is_dir() and str(path) not in sys.path:
            sys.path.insert(0, str(path))
    module = importlib.import_module(module_name)
    value = getattr(module, attr, None)
    if value is None:
        raise ConfigurationError(f"{module_name} has no attribute {attr!r}")
    if not isinstance(value, Server) and callable(value):
        value = value()
    if not isinstance(value, Server) and not inspect.isawaitable(value):
        raise ConfigurationError(f"{target} is not a flare_runtime.Server")
    return value


async def resolve_server(target: str, loaded: Server | Awaitable[Any]) -> Server:
    """The Server `load_server` returned, or what its awaitable resolves to."""

    server = loaded if isinstance(loaded, Server) else await loaded
    if not isinstance(server, Server):
        raise ConfigurationError(f"{target} did not return a flare_runtime.Server")
    return server


def client_url(transport: str, address: str, port: int, *, secure: bool) -> str:
    """The URL a client on this machine connects to for a listener bound to `address`.

    `port` is the bound port (the real one when `address` asked for port 0).
    A wildcard or empty host becomes ``localhost``; IPv6 hosts get brackets.
    The scheme is the registered transport's (`TransportSpec.url_scheme`).
    """
    scheme = get_transport(transport).url_scheme(secure=secure)
    host = address.rpartition(":")[0].strip("[]")
    if host in ("", "0.0.0.0", "::"):  # bound to every interface: reach it via loopback
        host = "localhost"
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"
