"""``flare list URL [SERVICE]``: the services a server serves, or a service's methods."""

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
List the services a server serves, one full name per line, like grpcurl list.
With SERVICE, list its methods (package.Service.Method) instead.

-l adds what the wire carries: each service's id, each method's cardinality and
route id (service:route; "-" for a route served on gRPC only) and, after the
services, every push type the server may push (flare watch decodes them).

{CONNECTION_HELP}"""


def configure(parser: argparse.ArgumentParser) -> None:
    """Set up ``flare list``'s arguments."""
    parser.description = DESCRIPTION
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    add_connection_arguments(parser)
    parser.add_argument("service", nargs="?", metavar="SERVICE", help="list this service's methods")
    parser.add_argument(
        "-l", "--long", action="store_true", help="show ids, cardinalities and push types"
    )
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    """Print the listing."""
    try:
        remote = Remote.from_arguments("list", args)
    except UsageError as error:
        print(f"flare list: {error}", file=sys.stderr)
        return 2

    async def body(remote: Remote) -> int:
        async with remote.connect() as channel:
            symbols = [args.service] if args.service else []
            schema = await remote.schema(channel, symbols)
        lines: list[str] = []
        if args.service:
            entry = schema.service_entry(args.service)
            ids = {route.method: route.route_id for route in entry.routes}
            for method in schema.service(args.service).methods:
                if not args.long:
                    lines.append(method.full_name)
                    continue
                route_id = ids.get(method.name, 0)
                wire = f"{entry.service_id}:{route_id}" if entry.service_id and route_id else "-"
                kind = _cardinality(method.client_streaming, method.server_streaming)
                lines.append(f"{method.full_name}  {kind}  {wire}")
        else:
            for entry in sorted(schema.listing.services, key=lambda item: item.name):
                if args.long and entry.service_id:
                    lines.append(f"{entry.name}  service {entry.service_id}")
                else:
                    lines.append(entry.name)
        pushes = [f"push {push.type_id}  {push.message}" for push in schema.listing.push_types]
        if args.long and not args.service:
            lines = [*_columns(lines), *_columns(pushes)]
        else:
            lines = _columns(lines)
        sys.stdout.write("".join(f"{line}\n" for line in lines))
        return 0

    return run(remote, body)


def _cardinality(client_streaming: bool, server_streaming: bool) -> str:
    if client_streaming:
        return "bidi_stream" if server_streaming else "client_stream"
    return "server_stream" if server_streaming else "unary"


def _columns(lines: list[str]) -> list[str]:
    """Lines whose fields (separated by two spaces) are padded into aligned columns."""
    rows = [line.split("  ") for line in lines]
    widths: dict[int, int] = {}
    for row in rows:
        for index, cell in enumerate(row[:-1]):
            widths[index] = max(widths.get(index, 0), len(cell))
    return [
        "  ".join([*(cell.ljust(widths[index]) for index, cell in enumerate(row[:-1])), row[-1]])
        for row in rows
    ]
