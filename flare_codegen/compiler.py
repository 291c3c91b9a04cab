"""Compile `.proto` files with the protoc bundled in grpcio-tools.

No system protoc is needed: `grpc_tools.protoc` ships one, together with the
well-known types. Flare's own option protos are always on the include path, so
schemas can ``import "flare/options/v1/options.proto"``.

protoc runs in a child process so that its diagnostics (which the C++ code
writes straight to file descriptor 2) can be captured and shown to the user.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc_tools
from google.protobuf import descriptor_pb2

from flare_codegen.errors import CompileError


def wellknown_include_dir() -> Path:
    """The directory holding ``google/protobuf/*.proto`` shipped with grpcio-tools."""
    return Path(grpc_tools.__file__).resolve().parent / "_proto"


def flare_include_dir() -> Path:
    """The directory holding ``flare/options/v1/options.proto``.

    In a source checkout this is ``schemas/``; in an installed wheel it is the
    copy shipped inside the `flare_codegen` package.
    """
    packaged = Path(__file__).resolve().parent / "include"
    if (packaged / "flare" / "options" / "v1" / "options.proto").is_file():
        return packaged
    checkout = Path(__file__).resolve().parent.parent / "schemas"
    return checkout


@dataclass(frozen=True, slots=True)
class CompiledSchema:
    """The result of compiling a set of files."""

    files: descriptor_pb2.FileDescriptorSet
    """Every file, imports included, dependencies before dependents."""
    targets: tuple[str, ...]
    """The files that were asked for, as paths relative to the include root."""


def find_proto_files(root: Path) -> list[str]:
    """Every ``*.proto`` under `root`, as sorted POSIX paths relative to `root`."""
    return sorted(path.relative_to(root).as_posix() for path in root.rglob("*.proto"))


def compile_protos(
    include_dirs: Sequence[Path],
    files: Sequence[str],
    *,
    source_info: bool = True,
) -> CompiledSchema:
    """Compile `files` (relative to one of `include_dirs`) into descriptors.

    Flare's option protos and the well-known types are appended to the include
    path. Raises `CompileError` with protoc's message when compilation fails.
    """
    if not files:
        raise CompileError("no .proto files to compile")
    includes = [*include_dirs]
    for extra in (flare_include_dir(), wellknown_include_dir()):
        if extra not in includes:
            includes.append(extra)
    with tempfile.TemporaryDirectory(prefix="flare-protoc-") as tmp:
        out = Path(tmp) / "set.binpb"
        args = [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            *(f"-I{path}" for path in includes),
            f"--descriptor_set_out={out}",
            "--include_imports",
            *(["--include_source_info"] if source_info else []),
            *files,
        ]
        proc = subprocess.run(args, capture_output=True, text=True, check=False, env={**os.environ})
        if proc.returncode != 0:
            raise CompileError(proc.stderr.strip() or proc.stdout.strip() or "protoc failed")
        descriptor_set = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    return CompiledSchema(files=descriptor_set, targets=tuple(files))


def compile_directory(root: Path, *, source_info: bool = True) -> CompiledSchema:
    """Compile every ``*.proto`` under `root` with `root` as the include root."""
    if not root.is_dir():
        raise CompileError(f"{root}: not a directory")
    files = find_proto_files(root)
    if not files:
        raise CompileError(f"{root}: no .proto files found")
    return compile_protos([root], files, source_info=source_info)
