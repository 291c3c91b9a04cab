"""The ``flare`` command line.

Each subcommand lives in its own module under `flare_codegen.commands` (or
`flare_runtime.commands` for runtime commands) exposing
``register(subparsers) -> None``; the module registers its parser and sets
``func`` (taking the parsed `argparse.Namespace`, returning the exit code)
with ``parser.set_defaults(func=...)``. Heavy imports belong inside ``func``
so that ``flare --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import cast

# Subcommand modules, in the order ``flare --help`` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "flare_codegen.commands.gen",
    "flare_codegen.commands.routes",
    "flare_codegen.schema.command",
    "flare_runtime.transports.quic_certs",
    "flare_runtime.commands.serve",
    "flare_runtime.commands.call",
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="flare", description="Flare: protobuf-first real-time messaging and RPC."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        module = importlib.import_module(name)
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``flare`` with `argv` (default: `sys.argv`); return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func = cast("Callable[[argparse.Namespace], int] | None", getattr(args, "func", None))
    if func is None:
        parser.print_help(sys.stderr)
        return 1
    try:
        return func(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
