"""Read one side of a comparison: a directory, a git ref, or a descriptor set.

Input forms (the same as buf's, for the ones Flare supports):

- ``DIR`` — every ``*.proto`` under it, compiled with the bundled protoc
  (source info kept, so findings carry line and column). A v1beta1 ``buf.yaml``
  with ``build.roots``, or a v2 one with ``modules``, makes each root (module
  directory) an include root, as buf does.
- ``PATH.git#ref=REF[,subdir=DIR]`` (also ``branch=``/``tag=``) — the tree of
  ``REF`` in that repository, read with ``git archive``; the work tree, index
  and HEAD are never touched. ``.git#ref=main`` is the usual CI form.
- ``FILE.binpb`` / ``FILE.pb`` — a serialized ``FileDescriptorSet`` (for example
  from ``flare schema build``). Well-known types and Flare's option protos in it
  count as imports, everything else is checked.

Every failure raises `InputError` with a message for the user.
"""

from __future__ import annotations

import importlib
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.message import DecodeError

from flare_codegen.compiler import compile_protos, find_proto_files
from flare_codegen.errors import CompileError, ConfigError, InputError
from flare_codegen.schema import config as config_module
from flare_codegen.schema.options import load_flare_options

# Files that a descriptor set carries only as dependencies.
IMPORT_ONLY_PREFIXES = ("google/protobuf/", "flare/options/v1/")


@dataclass(frozen=True, slots=True)
class LoadedInput:
    """The descriptors of one side, and where its configuration lives."""

    files: list[descriptor_pb2.FileDescriptorProto]
    targets: set[str]
    display: dict[str, str]
    """file name -> the path to print (root prefix included, as buf prints it)."""
    config: config_module.InputConfig | None
    """The configuration found in the input (directories and git trees only)."""


def is_git_input(spec: str) -> bool:
    """True for ``PATH.git#...`` specs."""
    repo, sep, _ = spec.partition("#")
    return bool(sep) and repo.rstrip("/").endswith(".git")


def load_input(spec: str, *, with_config: bool) -> LoadedInput:
    """Load `spec` (see the module docstring). `with_config` reads its buf.yaml rules."""
    if is_git_input(spec):
        with _git_tree(spec) as root:
            return _load_directory(root, with_config=with_config)
    path = Path(spec)
    if path.is_dir():
        return _load_directory(path, with_config=with_config)
    if path.is_file():
        return _load_descriptor_set(path)
    raise InputError(f"{spec}: no such directory, descriptor set or git input")


def _load_directory(root: Path, *, with_config: bool) -> LoadedInput:
    load_flare_options()
    try:
        input_config = config_module.load_config(root) if with_config else None
        roots = input_config.roots if input_config else config_module.read_roots(root)
    except ConfigError as exc:
        raise InputError(exc.message) from exc
    include_dirs = [root / r for r in roots] if roots else [root]
    files: list[str] = []
    display: dict[str, str] = {}
    for include, prefix in zip(include_dirs, roots or ("",), strict=True):
        if not include.is_dir():
            raise InputError(f"{include}: build root is not a directory")
        for name in find_proto_files(include):
            files.append(name)
            display[name] = f"{prefix.strip('/')}/{name}" if prefix else name
    if not files:
        raise InputError(f"{root}: no .proto files found")
    try:
        compiled = compile_protos(include_dirs, files, source_info=True)
    except CompileError as exc:
        raise InputError(exc.message) from exc
    return LoadedInput(list(compiled.files.file), set(files), display, input_config)


def _load_descriptor_set(path: Path) -> LoadedInput:
    load_flare_options()
    try:
        descriptor_set = descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes())
    except (DecodeError, OSError) as exc:
        raise InputError(f"{path}: not a valid FileDescriptorSet ({exc})") from exc
    files = list(descriptor_set.file)
    if not files or any(not f.name for f in files):
        raise InputError(f"{path}: not a valid FileDescriptorSet (no named files)")
    _validate(path, files)
    targets = {f.name for f in files if not f.name.startswith(IMPORT_ONLY_PREFIXES)}
    return LoadedInput(files, targets, {name: name for name in targets}, None)


def _validate(path: Path, files: list[descriptor_pb2.FileDescriptorProto]) -> None:
    """Build the files into a fresh pool: protobuf checks names, references and imports.

    A set written by protoc or buf passes; bytes that merely parse as a
    FileDescriptorSet (or a set missing its imports) are rejected here, before
    any rule looks at them.
    """
    pool = descriptor_pool.DescriptorPool()
    by_name = {f.name: f for f in files}
    added: set[str] = set()

    def add(name: str, trail: tuple[str, ...]) -> None:
        if name in added:
            return
        if name in trail:
            raise InputError(f"{path}: import cycle through {name!r}")
        proto = by_name.get(name) or _bundled_file(name)
        if proto is None:
            raise InputError(
                f"{path}: {trail[-1]!r} imports {name!r}, which the descriptor set does not "
                "contain (build it with its imports, e.g. flare schema build)"
            )
        for dependency in proto.dependency:
            add(dependency, (*trail, name))
        try:
            pool.Add(proto)
        except (TypeError, ValueError, KeyError) as exc:
            raise InputError(f"{path}: invalid descriptor for {name!r}: {exc}") from exc
        added.add(name)

    for proto in files:
        add(proto.name, ())


def _bundled_file(name: str) -> descriptor_pb2.FileDescriptorProto | None:
    """A well-known type or Flare's options, which sets built without imports omit."""
    if name == "flare/options/v1/options.proto":
        load_flare_options()
    elif name.startswith("google/protobuf/"):
        module = "google.protobuf." + name.removeprefix("google/protobuf/")
        try:
            importlib.import_module(module.removesuffix(".proto").replace("/", ".") + "_pb2")
        except ImportError:
            return None
    else:
        return None
    try:
        found = descriptor_pool.Default().FindFileByName(name)
    except KeyError:
        return None
    proto = descriptor_pb2.FileDescriptorProto()
    found.CopyToProto(proto)
    return proto


def _parse_git_spec(spec: str) -> tuple[Path, str, str]:
    repo, _, options = spec.partition("#")
    ref = ""
    subdir = ""
    for part in options.split(","):
        key, sep, value = part.partition("=")
        if not sep:
            raise InputError(f"{spec}: expected key=value after '#', got {part!r}")
        if key in ("ref", "branch", "tag"):
            ref = value
        elif key == "subdir":
            subdir = value.strip("/")
        elif key not in ("depth", "recurse_submodules"):
            raise InputError(f"{spec}: unknown git input option {key!r}")
    if not ref:
        raise InputError(f"{spec}: a git input needs ref=, branch= or tag=")
    return Path(repo or ".git"), ref, subdir


@contextmanager
def _git_tree(spec: str) -> Iterator[Path]:
    """Unpack the tree of the ref into a temporary directory, without a checkout."""
    git_dir, ref, subdir = _parse_git_spec(spec)
    if shutil.which("git") is None:
        raise InputError("git is not installed; it is needed for .git# inputs")
    if not git_dir.exists():
        raise InputError(f"{git_dir}: no such git repository")
    treeish = f"{ref}:{subdir}" if subdir else ref
    with tempfile.TemporaryDirectory(prefix="flare-schema-git-") as tmp:
        # Stream the archive into the directory: memory stays flat however
        # large the tree is.
        with subprocess.Popen(
            ["git", f"--git-dir={git_dir}", "archive", "--format=tar", treeish],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        ) as proc:
            assert proc.stdout is not None and proc.stderr is not None
            try:
                with tarfile.open(fileobj=proc.stdout, mode="r|") as archive:
                    archive.extractall(tmp, filter="data")
            except tarfile.TarError:
                pass  # git failed before writing a tar; its message is below
            message = proc.stderr.read().decode(errors="replace").strip()
        if proc.returncode != 0:
            raise InputError(f"{spec}: git could not read {treeish!r}: {message}")
        yield Path(tmp)
