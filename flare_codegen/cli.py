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
import os
import sys
from collections.abc import Callable, Sequence
from typing import cast

# Subcommand name -> the module registering it, in the order ``flare --help`` lists them.
COMMAND_MODULES: dict[str, str] = {
    "gen": "flare_codegen.commands.gen",
    "routes": "flare_codegen.commands.routes",
    "schema": "flare_codegen.schema.command",
    "cert": "flare_runtime.transports.quic_certs",
    "serve": "flare_runtime.commands.serve",
    "call": "flare_runtime.commands.call",
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser with subcommands registered.

    With a known `command`, only that subcommand's module is imported, so a
    run of ``flare schema check`` never pays for the runtime's imports.
    """
    parser = argparse.ArgumentParser(
        prog="flare", description="Flare: protobuf-first real-time messaging and RPC."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    names = [command] if command in COMMAND_MODULES else list(COMMAND_MODULES)
    for name in names:
        module = importlib.import_module(COMMAND_MODULES[name])
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``flare`` with `argv` (default: `sys.argv`); return the exit status."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(arguments[0] if arguments else None)
    args = parser.parse_args(arguments)
    func = cast("Callable[[argparse.Namespace], int] | None", getattr(args, "func", None))
    if func is None:
        parser.print_help(sys.stderr)
        return 1
    try:
        return func(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`flare routes --json | head`). Point stdout at
        # /dev/null so the flush at exit does not raise a second time.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 1


if __name__ == "__main__":
    sys.exit(main())
