"""``flare gen``'s engine: protoc with ``--python_out``, ``--mypy_out`` and ``--flare_out``.

Runs the protoc bundled with grpcio-tools, so no protoc needs to be installed;
Flare's option protos and the well-known types are on the include path. The
two Python plugins run as ``sys.executable -m ...`` through tiny launcher
scripts, so they work without the virtual environment's ``bin`` on PATH.
Output is deterministic: the same inputs give the same bytes.
"""

from __future__ import annotations

import os
import shlex
import stat
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from flare_codegen.compiler import (
    find_proto_files,
    flare_include_dir,
    wellknown_include_dir,
)
from flare_codegen.errors import CompileError
from flare_codegen.gen_config import GenConfig, Output

if TYPE_CHECKING:
    from flare_codegen.outputs import SyncReport


def _launcher(directory: Path, name: str, module: str) -> Path:
    path = directory / name
    path.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m {module} "$@"\n')
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def protoc_arguments(
    include_dirs: Sequence[Path],
    files: Sequence[str],
    out_dir: Path,
    *,
    plugin_dir: Path,
    python: bool = True,
    mypy: bool = True,
    flare_parameters: str = "",
) -> list[str]:
    """The ``python -m grpc_tools.protoc`` command line for one generation run."""
    includes = [*include_dirs]
    for extra in (flare_include_dir(), wellknown_include_dir()):
        if extra not in includes:
            includes.append(extra)
    flare = _launcher(plugin_dir, "protoc-gen-flare", "flare_codegen")
    args = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        *(f"-I{path}" for path in includes),
        f"--plugin=protoc-gen-flare={flare}",
    ]
    if python:
        args.append(f"--python_out={out_dir}")
    if mypy:
        mypy_plugin = _launcher(plugin_dir, "protoc-gen-mypy", "mypy_protobuf.main")
        args += [f"--plugin=protoc-gen-mypy={mypy_plugin}", f"--mypy_out=quiet:{out_dir}"]
    flare_out = f"{flare_parameters}:{out_dir}" if flare_parameters else str(out_dir)
    args += [f"--flare_out={flare_out}", *files]
    return args


def generate(
    schema_dir: Path,
    out_dir: Path,
    *,
    include_dirs: Sequence[Path] = (),
    files: Sequence[str] | None = None,
    python: bool = True,
    mypy: bool = True,
    flare_parameters: str = "",
) -> list[str]:
    """Generate code for every ``.proto`` under `schema_dir` (or just `files`) into `out_dir`.

    Returns the compiled file names. Raises `CompileError` with protoc's
    diagnostics (including the Flare plugin's ``file:line:col`` errors) when
    protoc fails, and when `out_dir` cannot be created.
    """
    if not schema_dir.is_dir():
        raise CompileError(f"{schema_dir}: not a directory")
    targets = list(files) if files is not None else find_proto_files(schema_dir)
    if not targets:
        raise CompileError(f"{schema_dir}: no .proto files found")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        # A file in the way, or no permission: a message, not a traceback.
        raise CompileError(
            f"{out_dir}: cannot create the output directory ({error.strerror})"
        ) from error
    with tempfile.TemporaryDirectory(prefix="flare-gen-") as tmp:
        args = protoc_arguments(
            [schema_dir, *include_dirs],
            targets,
            out_dir,
            plugin_dir=Path(tmp),
            python=python,
            mypy=mypy,
            flare_parameters=flare_parameters,
        )
        proc = subprocess.run(args, capture_output=True, text=True, check=False, env={**os.environ})
    if proc.returncode != 0:
        raise CompileError(proc.stderr.strip() or proc.stdout.strip() or "protoc failed")
    return targets


def generate_outputs(config: GenConfig) -> list[tuple[Output, int, SyncReport]]:
    """Run one ``flare gen`` configuration: every output from every input.

    Each output is generated into a temporary directory and synchronised into
    its directory (`flare_codegen.outputs`); with ``config.clean``, the
    generated files there that this run did not write are removed afterwards
    (an output directory generated twice, from one config, keeps what either
    wrote). Returns (output, number of .proto files compiled, report) per
    output. Raises `CompileError` like `generate`.
    """
    from flare_codegen.outputs import SyncReport, remove_stale, sync_tree  # noqa: PLC0415
    from flare_codegen.typescript.generate import generate_ts  # noqa: PLC0415

    targets = _targets_by_input(config)
    results: list[tuple[Output, int, SyncReport]] = []
    kept: dict[tuple[Path, str], set[str]] = {}
    for output in config.outputs:
        try:
            output.out.mkdir(parents=True, exist_ok=True)
        except OSError as error:  # a file in the way, or no permission
            raise CompileError(
                f"{output.out}: cannot create the output directory ({error.strerror})"
            ) from error
        report = SyncReport()
        compiled = 0
        for schema_dir, files in targets:
            with tempfile.TemporaryDirectory(prefix="flare-gen-out-") as tmp:
                if output.language == "python":
                    compiled += len(
                        generate(
                            schema_dir,
                            Path(tmp),
                            include_dirs=config.includes,
                            files=files,
                            flare_parameters=output.flare_opt,
                        )
                    )
                else:
                    compiled += len(
                        generate_ts(
                            schema_dir,
                            Path(tmp),
                            include_dirs=config.includes,
                            files=files,
                            import_extension=output.import_extension,
                            es_plugin=output.es_plugin,
                            flare_parameters=output.flare_opt,
                        )
                    )
                try:
                    sync_tree(Path(tmp), output.out, report)
                except OSError as error:
                    raise CompileError(f"{output.out}: cannot write ({error.strerror})") from error
        kept.setdefault((output.out.resolve(), output.language), set()).update(report.kept)
        results.append((output, compiled, report))
    if config.clean:
        for output, _, report in results:
            key = (output.out.resolve(), output.language)
            if key in kept:
                remove_stale(output.out, output.language, kept.pop(key), report)
    return results


def _targets_by_input(config: GenConfig) -> list[tuple[Path, list[str] | None]]:
    """(schema root, its files to generate or None for all) of each input."""
    for directory in config.inputs:
        if not directory.is_dir():
            raise CompileError(f"{directory}: not a directory")
    if config.files is None:
        return [(directory, None) for directory in config.inputs]
    chosen: list[tuple[Path, list[str] | None]] = []
    placed: set[str] = set()
    for directory in config.inputs:
        here = [name for name in config.files if (directory / name).is_file()]
        placed.update(here)
        if here:
            chosen.append((directory, here))
    missing = [name for name in config.files if name not in placed]
    if missing:
        raise CompileError(f"{missing[0]}: in none of the inputs ({config.source})")
    return chosen
