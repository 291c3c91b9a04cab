"""``flare watch URL [METHOD [REQUEST]]``: print the messages a server pushes, as JSON lines."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from flare_runtime.cli.remote import (
    CONNECTION_HELP,
    Remote,
    UsageError,
    add_connection_arguments,
    run,
)

DESCRIPTION = f"""\
Connect and print every message the server pushes, one JSON line each:

  {{"push": "examples.chat.v1.MessagePosted", "typeId": 1, "message": {{...}}}}

Push type ids are resolved through the server's reflection (flare list -l shows
them). With METHOD, that route is called first on the same connection (a login,
a subscription; REQUEST as for flare call, default {{}}); its responses are
printed as {{"response": {{...}}}} lines. Runs until the server closes the
connection, --count pushes have arrived, --timeout passes (exit 0 then) or
Ctrl-C. WebSocket, QUIC and plugin transports only: gRPC has no server push.

{CONNECTION_HELP}"""


def configure(parser: argparse.ArgumentParser) -> None:
    """Set up ``flare watch``'s arguments."""
    parser.description = DESCRIPTION
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    add_connection_arguments(parser)
    parser.add_argument("method", nargs="?", metavar="METHOD", help="route to call first")
    parser.add_argument(
        "json", nargs="?", metavar="REQUEST", help="its request JSON; '-' reads stdin"
    )
    parser.add_argument("-n", "--count", type=int, metavar="N", help="exit after N pushes")
    parser.add_argument(
        "--emit-defaults",
        action="store_true",
        help="print fields holding their default value (0, '', false, [])",
    )
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    """Watch; print pushes (see `DESCRIPTION`)."""
    from flare_runtime.reflection.schema import GRPC_SCHEMES  # noqa: PLC0415

    try:
        remote = Remote.from_arguments("watch", args)
        if remote.url.split(":", 1)[0].lower() in GRPC_SCHEMES:
            raise UsageError("gRPC has no server push: watch a ws://, wss:// or quic:// URL")
        if args.count is not None and args.count < 1:
            raise UsageError("--count must be at least 1")
    except UsageError as error:
        print(f"flare watch: {error}", file=sys.stderr)
        return 2
    remote.timeout_is_success = True

    async def body(remote: Remote) -> int:
        import asyncio  # noqa: PLC0415
        import json  # noqa: PLC0415

        from flare_runtime.cli.call import Printer, check_transport, parse_requests  # noqa: PLC0415

        symbols = [args.method] if args.method else []
        # The push table must be known before the watching connection opens.
        async with remote.connect() as channel:
            schema = await remote.schema(channel, symbols, push_types=True)
        printer = Printer(pool=schema.pool, emit_defaults=args.emit_defaults)

        def show(**fields: Any) -> None:
            print(json.dumps(fields), flush=True)

        async with remote.connect(push_tables=[schema.push_table()]) as channel:
            tasks: list[asyncio.Task[None]] = []
            if args.method:
                route = schema.route(args.method)
                check_transport(remote.url, route)
                if route.cardinality.client_streams:
                    raise UsageError(
                        f"{route.path} streams requests: watch calls a unary or "
                        "server-streaming route"
                    )
                text = sys.stdin.read() if args.json == "-" else (args.json or "{}")
                request = parse_requests(text, route, schema.pool)[0]
                options: dict[str, Any] = {
                    "timeout": remote.time_left(),
                    "metadata": remote.metadata,
                }
                if route.cardinality.server_streams:

                    async def responses() -> None:
                        async with channel.unary_stream(route, request, **options) as stream:
                            async for reply in stream:
                                show(response=printer.as_dict(reply))

                    tasks.append(asyncio.create_task(responses()))
                else:
                    reply = await channel.unary_unary(route, request, **options)
                    show(response=printer.as_dict(reply))

            async def pushes() -> None:
                seen = 0
                async for message in channel.pushes():
                    name = message.DESCRIPTOR.full_name
                    type_id = schema.push_type_id(message)
                    show(push=name, typeId=type_id, message=printer.as_dict(message))
                    seen += 1
                    if args.count is not None and seen >= args.count:
                        return

            watching = asyncio.create_task(pushes())
            try:
                # Until the pushes end; a failing subscription ends the watch too.
                pending = {watching, *tasks}
                while watching in pending:
                    done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                    for task in done:
                        task.result()  # raises the call's RpcError
            finally:
                for task in (watching, *tasks):
                    task.cancel()
        return 0

    return run(remote, body)
