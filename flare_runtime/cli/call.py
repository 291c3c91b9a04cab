"""``flare call URL /pkg.Service/Method '<json>'``: call any route with JSON in and out.

What the command does and promises is its help text, `DESCRIPTION`.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import sys
from pathlib import Path
from typing import Any

DESCRIPTION = """\
Call any route with a JSON request, like grpcurl.

The request is protobuf JSON; each response is printed as one JSON line. For a
client-streaming or bidi method give a JSON array of requests. The route is
looked up in the generated *_flare.py modules under --generated (default
./generated).

Exit status: 0 on OK; 1 with "CODE: message" on stderr for an RPC error or a
connection that fails; 2 for bad usage -- always one line, never a traceback.
--connect-timeout bounds connecting (every scheme); --timeout bounds the whole
command, connecting included. gRPC C-core's own log lines are silenced
(GRPC_VERBOSITY=NONE unless set); grpcs:// trusts $SSL_CERT_FILE as wss:// and
quic:// do.
"""


def configure(parser: argparse.ArgumentParser) -> None:
    """Set up ``flare call``'s arguments."""
    parser.description = DESCRIPTION
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("url", help="ws://, wss://, quic://, grpc:// or grpcs:// URL")
    parser.add_argument("method", help="/package.Service/Method")
    parser.add_argument("json", nargs="?", default="{}", help="request JSON ('-' reads stdin)")
    parser.add_argument("--token", help="bearer token")
    parser.add_argument(
        "-H", "--header", action="append", default=[], metavar="KEY:VALUE", help="metadata"
    )
    parser.add_argument(
        "--timeout", type=float, help="seconds for the whole command, connecting included"
    )
    parser.add_argument(
        "--connect-timeout",
        type=float,
        default=10.0,
        help="seconds to wait for the connection (default 10)",
    )
    parser.add_argument("--ca-cert", help="PEM file of a CA (or self-signed cert) to trust")
    parser.add_argument("--generated", default="generated", help="where generated code lives")
    parser.set_defaults(func=run)


def find_route(path: str, generated: Path) -> Any:
    """The `Route` at gRPC path `path`, searching generated ``*_flare.py`` modules."""
    from flare_runtime.routing import ServiceRoutes  # noqa: PLC0415 -- keeps `flare --help` fast

    service = path.strip("/").split("/")[0]
    if str(generated) not in sys.path:
        sys.path.insert(0, str(generated))
    for file in sorted(generated.rglob("*_flare.py")):
        if service not in file.read_text(encoding="utf-8"):
            continue
        module_name = ".".join(file.relative_to(generated).with_suffix("").parts)
        module = importlib.import_module(module_name)
        for value in vars(module).values():
            if isinstance(value, ServiceRoutes):
                for route in value.routes:
                    if route.path == path:
                        return route
    return None


def run(args: argparse.Namespace) -> int:
    """Make the call; print JSON responses."""
    from google.protobuf import json_format  # noqa: PLC0415 -- keeps `flare --help` fast

    from flare_runtime.client import connect  # noqa: PLC0415 -- keeps `flare --help` fast
    from flare_runtime.errors import ConnectionClosedError, FlareError, RpcError  # noqa: PLC0415 -- keeps `flare --help` fast
    from flare_runtime.metadata import Metadata  # noqa: PLC0415 -- keeps `flare --help` fast
    from flare_runtime.routing import Cardinality  # noqa: PLC0415 -- keeps `flare --help` fast

    # C-core logs to stderr on its own (TLS failures, GOAWAY...): this command says
    # what failed in one line of its own. Read when grpcio starts, so set it first.
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    for name, value in (("--timeout", args.timeout), ("--connect-timeout", args.connect_timeout)):
        if value is not None and not value > 0:
            print(f"flare call: {name} must be a positive number of seconds", file=sys.stderr)
            return 2
    route = find_route(args.method, Path(args.generated).resolve())
    if route is None:
        print(f"flare call: no route {args.method} in {args.generated}", file=sys.stderr)
        return 2
    text = sys.stdin.read() if args.json == "-" else args.json
    try:
        value = json.loads(text)
        items = value if isinstance(value, list) else [value]
        requests = [json_format.ParseDict(item, route.request_type()) for item in items]
        single = route.cardinality in {Cardinality.UNARY, Cardinality.SERVER_STREAM}
        if single and len(requests) != 1:
            raise ValueError(f"{route.path} takes one request, got {len(requests)}")
    except (ValueError, TypeError, json_format.ParseError) as exc:
        # json_format raises TypeError for a JSON value of the wrong shape (e.g. 5 for a message).
        print(f"flare call: bad request JSON: {exc}", file=sys.stderr)
        return 2
    pairs = []
    for header in args.header:
        key, sep, val = header.partition(":")
        if not sep:
            print(f"flare call: header {header!r} is not KEY:VALUE", file=sys.stderr)
            return 2
        pairs.append((key.strip(), val.strip()))
    try:
        metadata = Metadata(pairs)
    except ValueError as exc:
        print(f"flare call: bad header: {exc}", file=sys.stderr)
        return 2

    def show(message: Any) -> None:
        print(json_format.MessageToJson(message, indent=None), flush=True)

    ssl_context = None
    if args.ca_cert:
        import ssl  # noqa: PLC0415 -- keeps `flare --help` fast

        try:
            ssl_context = ssl.create_default_context(cafile=args.ca_cert)
        except (OSError, ValueError) as exc:  # missing, unreadable, or not PEM (ssl.SSLError)
            print(f"flare call: cannot use --ca-cert {args.ca_cert}: {exc}", file=sys.stderr)
            return 2
        ssl_context.minimum_version = ssl.TLSVersion.TLSv1_3

    async def main() -> None:
        loop = asyncio.get_running_loop()
        deadline = None if args.timeout is None else loop.time() + args.timeout
        open_timeout = args.connect_timeout
        if args.timeout is not None:
            open_timeout = min(open_timeout, args.timeout)
        async with connect(
            args.url, token=args.token, ssl_context=ssl_context, open_timeout=open_timeout
        ) as channel:
            left = None if deadline is None else max(0.001, deadline - loop.time())
            options: dict[str, Any] = {"timeout": left, "metadata": metadata}
            cardinality = route.cardinality
            if cardinality is Cardinality.UNARY:
                show(await channel.unary_unary(route, requests[0], **options))
            elif cardinality is Cardinality.SERVER_STREAM:
                async for reply in channel.unary_stream(route, requests[0], **options):
                    show(reply)
            elif cardinality is Cardinality.CLIENT_STREAM:
                show(await channel.stream_unary(route, requests, **options))
            else:
                async for reply in channel.stream_stream(route, requests, **options):
                    show(reply)

    try:
        asyncio.run(main())
    except RpcError as error:
        print(f"{error.code.name}: {error.message}", file=sys.stderr)
        return 1
    except (ConnectionClosedError, FlareError, OSError) as exc:
        print(f"flare call: {exc}", file=sys.stderr)
        return 1
    return 0
