"""What the commands that talk to a server share: ``call``, ``list``, ``describe``, ``watch``.

Each of them takes the same connection arguments (`add_connection_arguments`),
learns the server's schema the same way (`Remote.schema`: the server's
reflection, or local generated code with ``--generated``) and ends the same
way (`run`): exit status 0 on success; 1 with ``CODE: message`` for an RPC
error, or with ``flare CMD: reason`` when connecting fails; 2 with
``flare CMD: reason`` for bad usage (a malformed URL, header or certificate
file, bad JSON, a route or symbol the server does not serve) -- always one
line on stderr, never a traceback.

This module imports nothing heavy at import time: ``flare --help`` loads it.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import ssl

    from flare_runtime.client import Channel, Connecting
    from flare_runtime.metadata import Metadata
    from flare_runtime.reflection.schema import Schema
    from flare_runtime.routing import PushTable

CONNECTION_HELP = """\
The server's schema comes from its reflection (Flare's reflection service on
ws://, wss://, quic:// and plugin transports; gRPC's server reflection on
grpc:// and grpcs://), so no generated code is needed. With --generated DIR the
schema comes from the generated *_flare.py modules under DIR instead, and the
server is not asked (for a server started with reflection=False).

Exit status: 0 on success; 1 with "CODE: message" on stderr for an RPC error, or
"flare COMMAND: reason" when the server cannot be reached; 2 for bad usage (a
malformed URL, header, certificate or JSON; a route or symbol the server does not
serve). Errors are one line, never a traceback. --connect-timeout bounds
connecting on every scheme; --timeout bounds the whole command, connecting
included. grpcs://, wss:// and quic:// trust the system's CAs, $SSL_CERT_FILE, or
--ca-cert. gRPC C-core's own log lines are silenced (GRPC_VERBOSITY=NONE unless
set).
"""


class UsageError(Exception):
    """Bad command-line input: `run` prints it as one line and exits 2."""


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    """The URL and the options of every command that connects."""
    parser.add_argument(
        "url", metavar="URL", help="ws://, wss://, quic://, grpc://, grpcs:// (or a plugin's) URL"
    )
    parser.add_argument("--token", help="bearer token (sent as authorization: Bearer TOKEN)")
    parser.add_argument(
        "-H",
        "--header",
        action="append",
        default=[],
        metavar="KEY:VALUE",
        help="request metadata (repeatable)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="seconds for the whole command, connecting included",
    )
    parser.add_argument(
        "--connect-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="seconds to wait for the connection (default 10)",
    )
    parser.add_argument(
        "--ca-cert", metavar="FILE", help="PEM file of a CA (or self-signed cert) to trust"
    )
    parser.add_argument(
        "--generated",
        type=Path,
        metavar="DIR",
        help="use the generated *_flare.py modules under DIR instead of server reflection",
    )


@dataclass(slots=True)
class Remote:
    """A server as the command line names it: URL, credentials, limits, schema source."""

    command: str
    url: str
    token: str | None
    metadata: Metadata
    ssl_context: ssl.SSLContext | None
    connect_timeout: float
    timeout: float | None
    generated: Path | None
    deadline: float | None = None
    """The loop time by which the command must end (from --timeout), once `run` starts."""
    timeout_is_success: bool = False
    """Whether reaching --timeout ends the command with status 0 (``flare watch``)."""

    @classmethod
    def from_arguments(cls, command: str, args: argparse.Namespace) -> Remote:
        """Check the connection arguments; raises `UsageError`."""
        from flare_runtime.metadata import Metadata  # noqa: PLC0415

        for name, value in (
            ("--timeout", args.timeout),
            ("--connect-timeout", args.connect_timeout),
        ):
            if value is not None and not value > 0:
                raise UsageError(f"{name} must be a positive number of seconds")
        url = check_url(args.url)
        pairs = []
        for header in args.header:
            key, sep, value = header.partition(":")
            if not sep:
                raise UsageError(f"header {header!r} is not KEY:VALUE")
            pairs.append((key.strip(), value.strip()))
        try:
            metadata = Metadata(pairs)
        except ValueError as error:
            raise UsageError(f"bad header: {error}") from None
        generated = args.generated
        if generated is not None and not generated.is_dir():
            raise UsageError(f"--generated {generated}: not a directory")
        return cls(
            command=command,
            url=url,
            token=args.token,
            metadata=metadata,
            ssl_context=_ssl_context(args.ca_cert),
            connect_timeout=args.connect_timeout,
            timeout=args.timeout,
            generated=None if generated is None else generated.resolve(),
        )

    def time_left(self) -> float | None:
        """Seconds left of --timeout (at least a millisecond), or None."""
        if self.deadline is None:
            return None
        import asyncio  # noqa: PLC0415

        return max(0.001, self.deadline - asyncio.get_running_loop().time())

    def connect(self, push_tables: Sequence[PushTable] = (), **extra: Any) -> Connecting:
        """Open a channel to the server (``async with remote.connect() as channel``)."""
        from flare_runtime.client import connect  # noqa: PLC0415

        left = self.time_left()
        open_timeout = self.connect_timeout if left is None else min(self.connect_timeout, left)
        return connect(
            self.url,
            token=self.token,
            ssl_context=self.ssl_context,
            open_timeout=open_timeout,
            push_tables=push_tables,
            **extra,
        )

    def local_schema(self) -> Schema | None:
        """The schema of the generated code under --generated; None without it."""
        from flare_runtime.reflection.schema import load_generated  # noqa: PLC0415

        return None if self.generated is None else load_generated(self.generated)

    async def schema(
        self, channel: Channel, symbols: Sequence[str] = (), *, push_types: bool = False
    ) -> Schema:
        """The server's schema with the files defining `symbols` (see the module docstring)."""
        from flare_runtime.reflection.schema import fetch_schema  # noqa: PLC0415

        local = self.local_schema()
        if local is not None:
            return local
        return await fetch_schema(
            channel, self.url, symbols=symbols, push_types=push_types, timeout=self.time_left()
        )


def check_url(url: str) -> str:
    """`url` if it names a transport's scheme and a host; raises `UsageError`."""
    from urllib.parse import urlsplit  # noqa: PLC0415

    from flare_runtime.errors import ConfigurationError  # noqa: PLC0415
    from flare_runtime.transport_registry import REGISTRY  # noqa: PLC0415

    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError for a port that is not a number in range
    except ValueError as error:
        raise UsageError(f"bad URL {url!r}: {error}") from None
    if not parts.scheme or not parts.hostname:
        raise UsageError(
            f"bad URL {url!r}: expected SCHEME://HOST[:PORT], e.g. ws://localhost:8080"
        )
    try:
        REGISTRY.for_scheme(parts.scheme.lower())
    except ConfigurationError as error:
        raise UsageError(str(error)) from None
    return url


def _ssl_context(ca_cert: str | None) -> ssl.SSLContext | None:
    if not ca_cert:
        return None
    import ssl  # noqa: PLC0415

    try:
        context = ssl.create_default_context(cafile=ca_cert)
    except (OSError, ValueError) as error:  # missing, unreadable, or not PEM (ssl.SSLError)
        raise UsageError(f"cannot use --ca-cert {ca_cert}: {error}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    return context


def run(remote: Remote, body: Callable[[Remote], Awaitable[int]]) -> int:
    """Run ``body(remote)`` in a new event loop; map every failure to one stderr line.

    Returns the exit status (see the module docstring).
    """
    import asyncio  # noqa: PLC0415

    from flare_runtime.errors import FlareError, RpcError  # noqa: PLC0415
    from flare_runtime.reflection.schema import SchemaError  # noqa: PLC0415

    # C-core logs to stderr on its own (TLS failures, GOAWAY...): the command
    # says what failed in one line of its own. Read when grpcio starts.
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    # Likewise the libraries' log records (aioquic logs a failed handshake as a
    # warning), which logging's last-resort handler would print to stderr.
    import logging  # noqa: PLC0415

    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.NullHandler())

    async def main() -> int:
        if remote.timeout is not None:
            remote.deadline = asyncio.get_running_loop().time() + remote.timeout
        async with asyncio.timeout(remote.timeout):
            return await body(remote)

    try:
        return asyncio.run(main())
    except (UsageError, SchemaError) as error:
        fail(remote.command, str(error))
        return 2
    except RpcError as error:
        print(f"{error.code.name}: {error.message}", file=sys.stderr)
        return 1
    except TimeoutError:
        if remote.timeout_is_success:
            return 0
        fail(remote.command, f"timed out after {remote.timeout:g} s (--timeout)")
        return 1
    except (FlareError, OSError) as error:
        fail(remote.command, str(error) or type(error).__name__)
        return 1


def fail(command: str, message: str) -> None:
    """Print ``flare COMMAND: message`` as one line on stderr."""
    text = " ".join(message.split())
    print(f"flare {command}: {text}", file=sys.stderr)
