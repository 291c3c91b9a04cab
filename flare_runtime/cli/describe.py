"""``flare describe URL [SYMBOL...]``: services, methods, messages and enums as .proto text."""

from __future__ import annotations

import argparse
import sys

from flare_runtime.cli.remote import (
    CONNECTION_HELP,
    Remote,
    UsageError,
    add_connection_arguments,
    run,
)

DESCRIPTION = f"""\
Print what a server serves as .proto source, like grpcurl describe: each SYMBOL
(a service, a method as package.Service.Method, a message, an enum or a field),
or every service when none is given. Flare's options (service and route ids,
push type ids, idempotency, timeouts) are shown as option lines.

{CONNECTION_HELP}"""


def configure(parser: argparse.ArgumentParser) -> None:
    """Set up ``flare describe``'s arguments."""
    parser.description = DESCRIPTION
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    add_connection_arguments(parser)
    parser.add_argument(
        "symbols",
        nargs="*",
        metavar="SYMBOL",
        help="fully qualified name (default: every service)",
    )
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    """Print each symbol's description."""
    try:
        remote = Remote.from_arguments("describe", args)
    except UsageError as error:
        print(f"flare describe: {error}", file=sys.stderr)
        return 2

    async def body(remote: Remote) -> int:
        from flare_runtime.reflection.text import describe  # noqa: PLC0415

        async with remote.connect() as channel:
            symbols = list(args.symbols)
            schema = await remote.schema(channel, symbols)
            if not symbols:
                symbols = schema.service_names()
                schema = await remote.schema(channel, symbols)
        text = "\n".join(
            describe(schema.find(symbol.strip("/").replace("/", "."))) for symbol in symbols
        )
        sys.stdout.write(text)
        return 0

    return run(remote, body)
