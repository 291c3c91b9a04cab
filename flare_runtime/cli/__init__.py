"""The ``flare`` command line: `main` and the table of its subcommands.

::

    flare serve     flare_runtime.cli.serve          serve a Server over WebSocket/QUIC/gRPC
    flare call      flare_runtime.cli.call           call a route with JSON (grpcurl-like)
    flare list      flare_runtime.cli.list_services  list a server's services or methods
    flare describe  flare_runtime.cli.describe       print a server's symbols as .proto text
    flare watch     flare_runtime.cli.watch          print a server's pushes as JSON lines
    flare admin     flare_runtime.cli.admin          a server's admin API (stats, kick, drain)
    flare cert      flare_runtime.cli.cert           write a development TLS certificate
    flare completion flare_runtime.cli.completion    print a shell completion script
    flare gen       flare_codegen.commands.gen       generate Python code from .proto files
    flare routes    flare_codegen.commands.routes    print a schema's routing table
    flare scaffold  flare_codegen.commands.scaffold  write or update a handler module
    flare schema    flare_codegen.schema.command     schema CI (breaking-change detection)

`COMMANDS` names each subcommand's module and one-line summary. Only the
module of the command being run is imported, so ``flare --help`` and
``flare serve`` never load the code generator, and ``flare gen`` reports
missing code-generation dependencies in one line instead of a traceback.

A command module exposes ``configure(parser: argparse.ArgumentParser) -> None``:
it adds its arguments (and description) to the parser `main` created for it
and sets ``func`` -- taking the parsed `argparse.Namespace`, returning the
exit status -- with ``parser.set_defaults(func=...)``. Heavy imports belong
inside ``func``.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

from flare_runtime import __version__


@dataclass(frozen=True, slots=True)
class Command:
    """One subcommand of ``flare``."""

    module: str
    """The module whose ``configure(parser)`` sets the command up."""
    summary: str
    """The line ``flare --help`` shows."""
    requires: tuple[tuple[str, str], ...] = ()
    """(import name, what to install for it) of what the command needs beyond the runtime."""


_CODEGEN = (("flare_codegen", "flare-rpc[codegen]"), ("grpc_tools", "flare-rpc[codegen]"))

COMMANDS: dict[str, Command] = {
    "serve": Command("flare_runtime.cli.serve", "serve a Server over WebSocket, QUIC and gRPC"),
    "call": Command("flare_runtime.cli.call", "call a route with a JSON request (grpcurl-like)"),
    "list": Command(
        "flare_runtime.cli.list_services", "list a server's services, or a service's methods"
    ),
    "describe": Command(
        "flare_runtime.cli.describe", "show a server's services, methods and messages as .proto"
    ),
    "watch": Command(
        "flare_runtime.cli.watch", "print the messages a server pushes, as JSON lines"
    ),
    "admin": Command(
        "flare_runtime.cli.admin",
        "a server's admin API: stats, connections, sessions, kick, drain",
    ),
    "cert": Command("flare_runtime.cli.cert", "write TLS certificates for QUIC and wss/grpcs"),
    "completion": Command(
        "flare_runtime.cli.completion",
        "print a shell completion script (bash, zsh, fish, tcsh, powershell)",
        (("shtab", "shtab"),),
    ),
    "gen": Command(
        "flare_codegen.commands.gen",
        "generate Python or TypeScript code (messages, Flare routes, clients) from .proto files",
        (*_CODEGEN, ("mypy_protobuf", "flare-rpc[codegen]")),
    ),
    "routes": Command(
        "flare_codegen.commands.routes",
        "print the routing table of a schema directory or descriptor set",
        _CODEGEN,
    ),
    "scaffold": Command(
        "flare_codegen.commands.scaffold",
        "write a handler module for a service, or update one after the schema changed",
        (*_CODEGEN, ("libcst", "flare-rpc[scaffold]")),
    ),
    "schema": Command(
        "flare_codegen.schema.command",
        "schema CI: breaking-change detection (buf-compatible plus Flare's route rules)",
        (*_CODEGEN, ("yaml", "flare-rpc[codegen]")),
    ),
}
"""Subcommand name -> its `Command`, in the order ``flare --help`` lists them."""


def missing_requirements(command: Command) -> list[str]:
    """What to install for the modules `command` needs that cannot be imported, each once
    (empty when all can)."""
    missing: list[str] = []
    for module, distribution in command.requires:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found and distribution not in missing:
            missing.append(distribution)
    return missing


def build_parser(
    command: str | None = None, *, every_command: bool = False
) -> argparse.ArgumentParser:
    """The argument parser.

    When `command` names a command, only its sub-parser is built and only its
    module imported: all running it needs (a one-shot ``flare call`` should not
    pay for the others). Otherwise every command is listed, unconfigured
    (``flare --help``), or with `every_command` configured too, leaving out those
    whose dependencies are missing (shell completion).
    """
    parser = argparse.ArgumentParser(
        prog="flare",
        description="Flare: protobuf-first real-time messaging and RPC.",
        epilog="Run flare COMMAND --help for a command's arguments; docs/cli.md has examples.",
    )
    parser.add_argument("--version", action="version", version=f"flare {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, entry in COMMANDS.items():
        if command in COMMANDS and name != command:
            continue
        if every_command and missing_requirements(entry):
            continue
        sub = subparsers.add_parser(name, help=entry.summary, description=entry.summary)
        if name == command or every_command:
            module = importlib.import_module(entry.module)
            module.configure(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``flare`` with `argv` (default: `sys.argv`); return the exit status."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    command = arguments[0] if arguments else None
    entry = COMMANDS.get(command or "")
    if entry is not None:
        missing = missing_requirements(entry)
        if missing:
            wanted = " ".join(f"'{name}'" if "[" in name else name for name in missing)
            print(
                f"flare {command}: missing dependencies; run: pip install {wanted}", file=sys.stderr
            )
            return 1
    parser = build_parser(command)
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
