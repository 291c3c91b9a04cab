"""``flare gen --ts``'s engine: protoc with ``--es_out`` and ``--flare-ts_out``.

Runs the protoc bundled with grpcio-tools (no system protoc) with two plugins:
``protoc-gen-es`` (the message types, from npm ``@bufbuild/protoc-gen-es``)
and ``protoc-gen-flare-ts`` (this package, launched with the current
interpreter). Every file the schemas import (Flare's options file included) is
generated too, because the ``_pb.ts`` files import theirs. Output is deterministic.
"""

from __future__ import annotations

import os
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from flare_codegen.compiler import (
    compile_protos,
    find_proto_files,
    flare_include_dir,
    wellknown_include_dir,
)
from flare_codegen.errors import CompileError
from flare_codegen.typescript.es_names import wkt_import_path


def _plugin_launcher(directory: Path) -> Path:
    """A script running ``protoc-gen-flare-ts`` with this interpreter (no PATH needed)."""
    path = directory / "protoc-gen-flare-ts"
    path.write_text(
        f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m flare_codegen.typescript "$@"\n'
    )
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def find_protoc_gen_es(explicit: Path | None = None, start: Path | None = None) -> Path:
    """The ``protoc-gen-es`` executable: `explicit`, else on PATH, else in the nearest
    ``node_modules/.bin`` at or above `start` (the working directory).

    Raises `CompileError` with what to install when there is none.
    """
    if explicit is not None:
        if not explicit.is_file():
            raise CompileError(f"{explicit}: no such protoc-gen-es executable")
        return explicit
    on_path = shutil.which("protoc-gen-es")
    if on_path is not None:
        return Path(on_path)
    directory = (start or Path.cwd()).resolve()
    for candidate in (directory, *directory.parents):
        local = candidate / "node_modules" / ".bin" / "protoc-gen-es"
        if local.is_file():
            return local
    raise CompileError(
        "protoc-gen-es not found (it generates the message types): "
        "`npm install --save-dev @bufbuild/protoc-gen-es`, or pass --es-plugin PATH"
    )


def _with_imports(includes: Sequence[Path], targets: Sequence[str]) -> list[str]:
    """`targets` plus every file they import, transitively, except the well-known types.

    ``protoc-gen-es`` writes only the files it is asked for, and a ``_pb.ts``
    imports the ``_pb.ts`` of each file its ``.proto`` imports (Flare's options
    file included), so all of them are generated; well-known types come from
    ``@bufbuild/protobuf/wkt``.
    """
    compiled = compile_protos(includes, targets, source_info=False)
    closure = list(targets)
    for proto in compiled.files.file:
        if proto.name not in closure and wkt_import_path(proto.name) is None:
            closure.append(proto.name)
    return closure


def generate_ts(
    schema_dir: Path,
    out_dir: Path,
    *,
    include_dirs: Sequence[Path] = (),
    files: Sequence[str] | None = None,
    import_extension: str = "js",
    es_plugin: Path | None = None,
    flare_parameters: str = "",
) -> list[str]:
    """Generate ``_pb.ts`` and ``_flare.ts`` for every ``.proto`` under `schema_dir`
    (or just `files`), and the files they import, into `out_dir`; return the file names.

    `import_extension` goes to both plugins (``js`` suits Node's ESM and
    bundlers alike). Raises `CompileError` with protoc's diagnostics (the Flare
    plugin's ``file:line:col`` errors included), or when protoc-gen-es is missing.
    """
    if not schema_dir.is_dir():
        raise CompileError(f"{schema_dir}: not a directory")
    targets = list(files) if files is not None else find_proto_files(schema_dir)
    if not targets:
        raise CompileError(f"{schema_dir}: no .proto files found")
    es = find_protoc_gen_es(es_plugin)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CompileError(
            f"{out_dir}: cannot create the output directory ({error.strerror})"
        ) from error
    includes = [schema_dir, *include_dirs]
    for extra in (flare_include_dir(), wellknown_include_dir()):
        if extra not in includes:
            includes.append(extra)
    targets = _with_imports(includes, targets)
    flare_options = ",".join(
        option for option in (f"import_extension={import_extension}", flare_parameters) if option
    )
    with tempfile.TemporaryDirectory(prefix="flare-gen-ts-") as tmp:
        flare = _plugin_launcher(Path(tmp))
        args = [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            *(f"-I{path}" for path in includes),
            f"--plugin=protoc-gen-es={es}",
            f"--es_out=target=ts,import_extension={import_extension}:{out_dir}",
            f"--plugin=protoc-gen-flare-ts={flare}",
            f"--flare-ts_out={flare_options}:{out_dir}",
            *targets,
        ]
        proc = subprocess.run(args, capture_output=True, text=True, check=False, env={**os.environ})
    if proc.returncode != 0:
        raise CompileError(proc.stderr.strip() or proc.stdout.strip() or "protoc failed")
    return targets
