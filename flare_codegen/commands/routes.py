"""``flare routes SCHEMA``: print the routing table of a schema directory or descriptor set."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def configure(parser: argparse.ArgumentParser) -> None:
    """Set up ``flare routes``'s arguments (see `flare_runtime.cli`)."""
    parser.description = (
        "Print every route (path, service id, route id, wire id, cardinality, "
        "resolved options) and push type of SCHEMA: a directory of .proto files, "
        "or a binary FileDescriptorSet (protoc --descriptor_set_out --include_imports)."
    )
    parser.add_argument(
        "schema", type=Path, metavar="SCHEMA", help="a directory of .proto files or a .binpb"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the table; report compile or validation errors and return 1."""
    from flare_codegen.errors import CompileError  # noqa: PLC0415 (keep `flare --help` fast)
    from flare_codegen.routes import load_routes, routes_json, routes_text  # noqa: PLC0415 (keep `flare --help` fast)

    try:
        files = load_routes(args.schema)
    except CompileError as error:
        print(error.message, file=sys.stderr)
        return 1
    if args.json:
        json.dump(routes_json(files), sys.stdout, indent=2, sort_keys=False)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(routes_text(files))
    return 0
