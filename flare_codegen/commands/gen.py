"""``flare gen [SCHEMA_DIR -o OUT]``: generate code from .proto files.

Python (``_pb2.py``, ``_pb2.pyi``, ``_flare.py``), or with ``--ts``
TypeScript (``_pb.ts`` by protoc-gen-es, ``_flare.ts`` by
`flare_codegen.typescript`). Without SCHEMA_DIR, what to generate comes from
the gen table of a configuration file (`flare_codegen.gen_config`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flare_codegen.gen_config import GenConfig

DESCRIPTION = """\
Compile .proto files with the protoc bundled in grpcio-tools and write protoc's
_pb2.py, mypy-protobuf's _pb2.pyi and Flare's _flare.py into OUT (with --ts:
protoc-gen-es's _pb.ts and Flare's _flare.ts). Flare's option protos and the
well-known types are always importable. Files whose bytes did not change are not
rewritten.

Without SCHEMA_DIR, everything comes from a configuration (like buf.gen.yaml): the
[gen] table of ./flare.toml, or [tool.flare.gen] in ./flare.toml or
./pyproject.toml, or the file given with --config. It lists the inputs and every
output (python and/or typescript, with their options), and by default removes
stale generated files from the outputs: files that the generators Flare drives
wrote (their header says so) and that this run did not write, such as the outputs
of a renamed or deleted .proto. Nothing else in an output directory is touched.
On the command line --clean does the same for OUT.

Exit status: 0; 1 with protoc's or the plugin's messages (file:line:col) when
generation fails; 2 for a bad command line or configuration.
"""


def configure(parser: argparse.ArgumentParser) -> None:
    """Set up ``flare gen``'s arguments (see `flare_runtime.cli`)."""
    parser.description = DESCRIPTION
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "schema_dir",
        type=Path,
        nargs="?",
        metavar="SCHEMA_DIR",
        help="schema root: every .proto under it is generated (default: the configuration)",
    )
    parser.add_argument("-o", "--out", type=Path, metavar="OUT", help="output directory")
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="read the gen table of FILE (flare.toml or pyproject.toml)",
    )
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
        "--clean",
        action="store_true",
        help="remove generated files in OUT that this run does not write (not with --only)",
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
    from flare_codegen.errors import CodegenError, CompileError  # noqa: PLC0415 (keep `flare --help` fast)
    from flare_codegen.generate import generate_outputs  # noqa: PLC0415 (keep `flare --help` fast)

    try:
        config = _config(args)
    except _UsageError as error:
        print(f"flare gen: {error}", file=sys.stderr)
        return 2
    except CodegenError as error:  # a bad configuration file
        print(f"flare gen: {error.message}", file=sys.stderr)
        return 2
    try:
        results = generate_outputs(config)
    except CompileError as error:
        print(error.message, file=sys.stderr)
        return 1
    for output, compiled, report in results:
        what = "TypeScript for " if output.language == "typescript" else ""
        print(
            f"generated {what}{compiled} file(s) into {output.out} ({report.summary()})",
            file=sys.stderr,
        )
        for name in report.removed:
            print(f"  removed stale {output.out / name}", file=sys.stderr)
    return 0


class _UsageError(Exception):
    pass


def _config(args: argparse.Namespace) -> GenConfig:
    from flare_codegen.gen_config import GenConfig, Output, find_config, load_config  # noqa: PLC0415

    if args.schema_dir is None:
        for flag, given in (
            ("-o", args.out),
            ("--only", args.files),
            ("-I", args.include),
            ("--clean", args.clean),
            ("--ts", args.ts),
        ):
            if given:
                raise _UsageError(f"{flag} needs SCHEMA_DIR (the configuration states its own)")
        path = args.config or find_config(Path())
        if path is None:
            raise _UsageError(
                "give SCHEMA_DIR -o OUT, or write a [gen] table in flare.toml (or "
                "[tool.flare.gen] in pyproject.toml) here, or name one with --config"
            )
        return load_config(path)
    if args.config is not None:
        raise _UsageError("give SCHEMA_DIR or --config, not both")
    if args.out is None:
        raise _UsageError("SCHEMA_DIR needs -o OUT")
    if args.clean and args.files:
        raise _UsageError("--clean needs every file of SCHEMA_DIR: drop --only")
    return GenConfig(
        inputs=(args.schema_dir,),
        outputs=(
            Output(
                language="typescript" if args.ts else "python",
                out=args.out,
                flare_opt=args.flare_opt,
                import_extension=args.import_extension,
                es_plugin=args.es_plugin,
            ),
        ),
        includes=tuple(args.include),
        files=tuple(args.files) or None,
        clean=args.clean,
    )
