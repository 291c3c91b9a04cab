"""``flare gen SCHEMA_DIR -o OUT``: generate ``_pb2.py``, ``_pb2.pyi`` and ``_flare.py``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def configure(parser: argparse.ArgumentParser) -> None:
    """Set up ``flare gen``'s arguments (see `flare_runtime.cli`)."""
    parser.description = (
        "Compile every .proto under SCHEMA_DIR with the protoc bundled in grpcio-tools "
        "and write protoc's _pb2.py, mypy-protobuf's _pb2.pyi and Flare's _flare.py "
        "into OUT. Flare's option protos and the well-known types are always importable."
    )
    parser.add_argument("schema_dir", type=Path, metavar="SCHEMA_DIR")
    parser.add_argument("-o", "--out", type=Path, required=True, metavar="OUT")
    parser.add_argument(
        "-I",
        "--include",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="extra import directory (may be repeated)",
    )
    parser.add_argument(
        "--flare-opt",
        default="",
        metavar="PARAMS",
        help="protoc-gen-flare parameters, e.g. require_ids,emit_empty",
    )
    parser.add_argument(
        "--only",
        dest="files",
        action="append",
        default=[],
        metavar="FILE",
        help="generate only FILE (relative to SCHEMA_DIR; may be repeated); default: every .proto",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Generate; print protoc's errors and return 1 when it fails."""
    from flare_codegen.errors import CompileError  # noqa: PLC0415 (keep `flare --help` fast)
    from flare_codegen.generate import generate  # noqa: PLC0415 (keep `flare --help` fast)

    try:
        files = generate(
            args.schema_dir,
            args.out,
            include_dirs=args.include,
            files=args.files or None,
            flare_parameters=args.flare_opt,
        )
    except CompileError as error:
        print(error.message, file=sys.stderr)
        return 1
    print(f"generated {len(files)} file(s) into {args.out}", file=sys.stderr)
    return 0
