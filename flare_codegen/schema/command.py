"""``flare schema check`` and ``flare schema build``.

Exit codes of ``check`` (buf's): 0 no breaking change, 100 breaking changes
found, 1 usage error (bad or missing arguments too), unreadable input, bad
configuration or a ``.proto`` that does not compile (protoc's own message is
printed, never a traceback).
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

# report.py imports its rule machinery only for type checking: cheap at start-up.
from flare_codegen.schema.report import FORMATS, write_report

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_BREAKING = 100


class _UsageErrorExitsOne(argparse.ArgumentParser):
    """argparse exits 2 on a usage error; ``flare schema`` promises 1, like buf."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message}\n")


def configure(parser: argparse.ArgumentParser) -> None:
    """Set up ``flare schema`` with its ``check`` and ``build`` subcommands."""
    parser.description = "Schema CI: breaking-change detection and descriptor sets."
    commands = parser.add_subparsers(
        dest="schema_command", metavar="SUBCOMMAND", parser_class=_UsageErrorExitsOne
    )
    parser.set_defaults(func=lambda args: _usage(parser))

    check = commands.add_parser(
        "check",
        help="report changes that break deployed clients",
        description=(
            "Compare INPUT with --against and report breaking changes. An input is a "
            "directory of .proto files, a git ref (.git#ref=main[,subdir=schemas]) or a "
            "FileDescriptorSet (.binpb/.pb). Rules come from INPUT's buf.yaml, flare.toml "
            "or pyproject.toml [tool.flare.schema]. Exit 0: clean, 100: breaking, 1: error."
        ),
    )
    check.add_argument("input", metavar="INPUT", help="the new schema")
    check.add_argument("--against", required=True, help="the schema deployed clients use")
    check.add_argument("--format", choices=FORMATS, default="text", help="output format")
    check.set_defaults(func=run_check)

    build = commands.add_parser(
        "build",
        help="compile a schema into a FileDescriptorSet (.binpb)",
        description="Compile INPUT (with imports and source info) into one FileDescriptorSet.",
    )
    build.add_argument("input", metavar="INPUT", help="a directory of .proto files or a git ref")
    build.add_argument("-o", "--output", required=True, help="where to write the .binpb")
    build.set_defaults(func=run_build)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return EXIT_ERROR


def run_check(args: argparse.Namespace) -> int:
    """Run ``flare schema check``; see the module docstring for exit codes."""
    from flare_codegen.errors import InputError  # noqa: PLC0415 (keep `flare --help` fast)
    from flare_codegen.schema.check import check  # noqa: PLC0415 (keep `flare --help` fast)

    try:
        result = check(args.input, args.against)
    except InputError as exc:
        print(f"flare schema check: {exc.message}", file=sys.stderr)
        return EXIT_ERROR
    write_report(result, args.format, sys.stdout, sys.stderr)
    return EXIT_BREAKING if result.breaking else EXIT_OK


def run_build(args: argparse.Namespace) -> int:
    """Run ``flare schema build``: write the input's FileDescriptorSet to ``-o``."""
    from pathlib import Path  # noqa: PLC0415 (keep `flare --help` fast)

    from google.protobuf import descriptor_pb2  # noqa: PLC0415 (keep `flare --help` fast)

    from flare_codegen.errors import InputError  # noqa: PLC0415 (keep `flare --help` fast)
    from flare_codegen.schema.inputs import is_git_input, load_input  # noqa: PLC0415 (keep `flare --help` fast)

    if not is_git_input(args.input) and not Path(args.input).is_dir():
        print(f"flare schema build: {args.input}: not a directory or git input", file=sys.stderr)
        return EXIT_ERROR
    try:
        loaded = load_input(args.input, with_config=False)
    except InputError as exc:
        print(f"flare schema build: {exc.message}", file=sys.stderr)
        return EXIT_ERROR
    descriptor_set = descriptor_pb2.FileDescriptorSet(file=loaded.files)
    try:
        Path(args.output).write_bytes(descriptor_set.SerializeToString())
    except OSError as exc:
        print(f"flare schema build: {args.output}: {exc.strerror}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK
