"""``flare gen SCHEMA_DIR -o OUT``: generate ``_pb2.py``, ``_pb2.pyi`` and ``_flare.py``.

With ``--ts``: TypeScript instead, ``_pb.ts`` (protoc-gen-es) and ``_flare.ts``
(`flare_codegen.typescript`).
"""

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
    parser.add_argument(
        "--ts",
        action="store_true",
        help="generate TypeScript for @flare/client instead: protoc-gen-es's _pb.ts and _flare.ts",
    )
    parser.add_argument(
        "--es-plugin",
        type=Path,
        metavar="PATH",
        help="with --ts: the protoc-gen-es executable (default: PATH, then node_modules/.bin)",
    )
    parser.add_argument(
        "--import-extension",
        choices=("js", "ts", "none"),
        default="js",
        help="with --ts: how generated imports end (default js, for Node ESM and bundlers)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Generate; print protoc's errors and return 1 when it fails."""
    from flare_codegen.errors import CompileError  # noqa: PLC0415 (keep `flare --help` fast)
    from flare_codegen.generate import generate  # noqa: PLC0415 (keep `flare --help` fast)

    if args.ts:
        return _run_ts(args)
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


def _run_ts(args: argparse.Namespace) -> int:
    from flare_codegen.errors import CompileError  # noqa: PLC0415 (keep `flare --help` fast)
    from flare_codegen.typescript.generate import generate_ts  # noqa: PLC0415

    try:
        files = generate_ts(
            args.schema_dir,
            args.out,
            include_dirs=args.include,
            files=args.files or None,
            import_extension=args.import_extension,
            es_plugin=args.es_plugin,
            flare_parameters=args.flare_opt,
        )
    except CompileError as error:
        print(error.message, file=sys.stderr)
        return 1
    print(f"generated TypeScript for {len(files)} file(s) into {args.out}", file=sys.stderr)
    return 0
