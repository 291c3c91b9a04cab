"""``flare scaffold SCHEMA SERVICE -o FILE``: write or update a handler module (libcst)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DESCRIPTION = """\
Write a handler module for SERVICE: a class deriving from the generated handler
base with one typed async method per route, each raising NotImplementedError until
you write it (the server answers UNIMPLEMENTED meanwhile).

When FILE exists, bring it in step with the schema instead: methods for new routes
are added, the signatures of routes whose request or response type or cardinality
changed are updated (with a comment when the body must change), methods matching no
route any more are left in place, marked with a comment, and reported; imports
follow. Nothing else in FILE changes: bodies, comments and formatting are kept byte
for byte. Types are compared by what they resolve to, so a method typed your own way
is left alone.

SCHEMA is a directory of .proto files or a descriptor set, as for flare routes; the
module imports the generated code as flare gen writes it (generated/ on the path).
Without -o the new module is printed. Exit status: 0; 1 when --check finds FILE out
of date, or the schema does not compile; 2 for a bad command line or a FILE that
cannot be updated.
"""


def configure(parser: argparse.ArgumentParser) -> None:
    """Set up ``flare scaffold``'s arguments (see `flare_runtime.cli`)."""
    parser.description = DESCRIPTION
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("schema", type=Path, metavar="SCHEMA", help="schema directory or set")
    parser.add_argument(
        "service", metavar="SERVICE", help="package.Service (or the service's unique name)"
    )
    parser.add_argument(
        "-o", "--out", type=Path, metavar="FILE", help="the module to write or update"
    )
    parser.add_argument(
        "--class",
        dest="class_name",
        metavar="NAME",
        help="the handler class of a new module (default: the service's name)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="change nothing; exit 1 when FILE is not in step with the schema",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Write, update or check the module; report what changed on stderr."""
    from flare_codegen.errors import CompileError  # noqa: PLC0415 (keep `flare --help` fast)
    from flare_codegen.routes import load_routes  # noqa: PLC0415
    from flare_codegen.scaffold import (  # noqa: PLC0415
        ScaffoldError,
        find_service,
        render_module,
        update_module,
    )

    try:
        files = load_routes(args.schema)
    except CompileError as error:
        print(error.message, file=sys.stderr)
        return 1
    try:
        file, service = find_service(files, args.service)
    except ScaffoldError as error:
        print(f"flare scaffold: {error.message}", file=sys.stderr)
        return 2
    out: Path | None = args.out
    if out is None or not out.exists():
        text = render_module(file, service, args.class_name)
        if args.check:
            print(f"flare scaffold: {out} does not exist", file=sys.stderr)
            return 1
        if out is None:
            sys.stdout.write(text)
            return 0
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(text, encoding="utf-8")
        except OSError as error:
            print(f"flare scaffold: cannot write {out}: {error.strerror}", file=sys.stderr)
            return 2
        names = ", ".join(method.handler_name for method in service.methods) or "no methods"
        print(f"flare scaffold: wrote {out} ({names})", file=sys.stderr)
        return 0
    try:
        original = out.read_text(encoding="utf-8")
        text, report = update_module(original, file, service)
    except (OSError, UnicodeDecodeError) as error:
        print(f"flare scaffold: cannot read {out}: {error}", file=sys.stderr)
        return 2
    except ScaffoldError as error:
        print(f"flare scaffold: {out}: {error.message}", file=sys.stderr)
        return 2
    for label, handlers in (
        ("added", report.added),
        ("updated", report.updated),
        ("no route any more (marked, left in place)", report.removed),
    ):
        if handlers:
            print(f"flare scaffold: {out}: {label}: {', '.join(handlers)}", file=sys.stderr)
    if text == original:
        print(f"flare scaffold: {out} is up to date", file=sys.stderr)
        return 0
    if args.check:
        return 1
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as error:
        print(f"flare scaffold: cannot write {out}: {error.strerror}", file=sys.stderr)
        return 2
    return 0
