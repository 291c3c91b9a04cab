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

Inputs may be hostile (in CI, a pull request writes the checked tree): a
``.proto`` linking out of its tree is refused or skipped, never read; a ref is
validated and reaches ``git archive`` only as an object id; descriptor sets are
validated before any rule reads them (docs/security/schema-ci.md).

Every failure raises `InputError` with a one-line message for the user (or
protoc's own diagnostics).
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import posixpath
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.message import DecodeError

from flare_codegen.compiler import compile_protos, find_proto_files
from flare_codegen.descriptor_text import first_invalid_text
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
    """file name -> its path from the input (build root prefix included); configs match it."""
    config: config_module.InputConfig | None
    """The configuration found in the input (directories and git trees only)."""
    location: str = ""
    """What buf prints before `display`: the directory as given (normalised, so ``schemas/``
    and ``./schemas`` give ``schemas``, ``.`` gives nothing), a git input's ``subdir``, or
    nothing for a descriptor set. Findings then carry the path from where the command ran
    (``schemas/chat/v1/chat.proto``), which GitHub needs to attach annotations."""


def is_git_input(spec: str) -> bool:
    """True for ``PATH.git#...`` specs."""
    repo, sep, _ = spec.partition("#")
    return bool(sep) and repo.rstrip("/").endswith(".git")


def load_input(spec: str, *, with_config: bool) -> LoadedInput:
    """Load `spec` (see the module docstring). `with_config` reads its buf.yaml rules."""
    if is_git_input(spec):
        with _git_tree(spec) as root:
            loaded = _load_directory(root, with_config=with_config)
        return dataclasses.replace(loaded, location=parse_git_spec(spec).subdir)
    path = Path(spec)
    if path.is_dir():
        loaded = _load_directory(path, with_config=with_config)
        location = posixpath.normpath(path.as_posix())
        return dataclasses.replace(loaded, location="" if location == "." else location)
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
    inside = root.resolve()
    files: list[str] = []
    display: dict[str, str] = {}
    for include, prefix in zip(include_dirs, roots or ("",), strict=True):
        if not include.is_dir():
            raise InputError(f"{include}: build root is not a directory")
        for name in find_proto_files(include):
            _check_inside(include / name, inside)
            files.append(name)
            display[name] = f"{prefix.strip('/')}/{name}" if prefix else name
    if not files:
        raise InputError(f"{root}: no .proto files found")
    try:
        compiled = compile_protos(include_dirs, files, source_info=True)
    except CompileError as exc:
        raise InputError(exc.message) from exc
    return LoadedInput(list(compiled.files.file), set(files), display, input_config)


def _check_inside(path: Path, root: Path) -> None:
    """Refuse a ``.proto`` that is a link out of the input, or not a regular file.

    In CI the input is a pull request's tree: a link to a secret would have
    protoc read it (and quote it in errors); one to a device or a FIFO would
    leave protoc reading for ever.
    """
    resolved = path.resolve()
    if not resolved.is_relative_to(root):
        raise InputError(f"{path}: a symbolic link out of the input; links are not followed")
    if not resolved.is_file():
        raise InputError(f"{path}: not a regular file")


def _load_descriptor_set(path: Path) -> LoadedInput:
    load_flare_options()
    try:
        descriptor_set = descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes())
    except (DecodeError, OSError) as exc:
        raise InputError(f"{path}: not a valid FileDescriptorSet ({exc})") from exc
    invalid = first_invalid_text(descriptor_set)
    if invalid is not None:
        raise InputError(f"{path}: not a valid FileDescriptorSet (not UTF-8 text in {invalid})")
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


# Whitespace, control characters and ':' (git's tree:path separator) never
# belong in a ref; a leading '-' would make git read it as an option.
_BAD_REF = re.compile(r"[\x00-\x20\x7f:\\]|^-|^$")
_GIT_TIMEOUT = 120.0
"""Seconds a git command that is not streaming a tree may take (rev-parse)."""


@dataclass(frozen=True, slots=True)
class GitSpec:
    """A parsed ``PATH.git#ref=REF[,subdir=DIR]`` input."""

    git_dir: Path
    revision: str
    """What ``git rev-parse`` resolves: ``ref=`` as given, ``refs/heads/B``, ``refs/tags/T``."""
    subdir: str
    """A relative path inside the tree, ``""`` for its root."""


def _one_line(text: str) -> str:
    """`text` with control characters escaped, so a message about it stays on one line."""
    return re.sub(r"[\x00-\x1f\x7f]", lambda match: f"\\x{ord(match.group()):02x}", text)


def parse_git_spec(spec: str) -> GitSpec:
    """Parse and validate a git input; raises `InputError` for anything unsafe or unknown.

    A ref must not start with ``-`` (git would take it for an option) nor hold
    whitespace, control characters, ``:`` or ``\\``; ``branch=`` and ``tag=``
    name ``refs/heads/...`` and ``refs/tags/...``. ``subdir`` must stay inside
    the tree: relative, without ``.`` or ``..`` components.
    """
    shown = _one_line(spec)
    repo, _, options = spec.partition("#")
    revision = ""
    subdir = ""
    for part in options.split(","):
        key, sep, value = part.partition("=")
        if not sep:
            raise InputError(f"{shown}: expected key=value after '#', got '{_one_line(part)}'")
        if key in ("ref", "branch", "tag"):
            if _BAD_REF.search(value):
                raise InputError(f"{shown}: {key}='{_one_line(value)}' is not a valid git ref")
            prefix = {"ref": "", "branch": "refs/heads/", "tag": "refs/tags/"}[key]
            revision = prefix + value
        elif key == "subdir":
            subdir = value.strip("/")
            parts = subdir.split("/")
            if subdir and (
                value.startswith("/")
                or any(part in ("", ".", "..") for part in parts)
                or re.search(r"[\x00-\x1f\x7f\\]", subdir)
            ):
                raise InputError(
                    f"{shown}: subdir='{_one_line(value)}' must be a path inside the repository"
                )
        elif key not in ("depth", "recurse_submodules"):
            raise InputError(f"{shown}: unknown git input option '{_one_line(key)}'")
    if not revision:
        raise InputError(f"{shown}: a git input needs ref=, branch= or tag=")
    return GitSpec(Path(repo or ".git"), revision, subdir)


def _git(spec: str, git_dir: Path, *arguments: str) -> str:
    """Run a short git command; its stdout, empty when it fails (`InputError` on a timeout)."""
    try:
        proc = subprocess.run(
            ["git", f"--git-dir={git_dir}", *arguments],
            capture_output=True,
            text=True,
            errors="replace",
            check=False,
            timeout=_GIT_TIMEOUT,
            env={**os.environ, "GIT_TERMINAL_PROMPT": "0"},
        )
    except subprocess.TimeoutExpired as exc:
        raise InputError(f"{_one_line(spec)}: git took longer than {_GIT_TIMEOUT:.0f} s") from exc
    if proc.returncode != 0:
        return ""  # the caller says what it could not find
    return proc.stdout.strip()


@contextmanager
def _git_tree(spec: str) -> Iterator[Path]:
    """Unpack the tree of the ref into a temporary directory, without a checkout.

    The ref is resolved to an object id first (``rev-parse --verify``), and
    only that id reaches ``git archive``: nothing the caller wrote is read as
    an option. Members are extracted one by one with tarfile's ``data``
    filter; a symbolic link that leaves the tree is skipped (one named
    ``*.proto`` is an error), and the archive is always read to its end, so
    git never blocks writing it.
    """
    parsed = parse_git_spec(spec)
    if shutil.which("git") is None:
        raise InputError("git is not installed; it is needed for .git# inputs")
    if not parsed.git_dir.exists():
        raise InputError(f"{parsed.git_dir}: no such git repository")
    revision = parsed.revision + "^{tree}"
    tree = _git(spec, parsed.git_dir, "rev-parse", "--verify", "--quiet", revision)
    if not re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", tree):
        raise InputError(
            f"{_one_line(spec)}: git could not read {parsed.revision!r}: no such revision"
        )
    treeish = f"{tree}:{parsed.subdir}" if parsed.subdir else tree
    with (
        tempfile.TemporaryDirectory(prefix="flare-schema-git-") as tmp,
        tempfile.TemporaryFile() as errors,
    ):
        # Stream the archive into the directory: memory stays flat however
        # large the tree is. git's stderr goes to a file, so neither pipe can fill.
        with subprocess.Popen(
            ["git", f"--git-dir={parsed.git_dir}", "archive", "--format=tar", treeish],
            stdout=subprocess.PIPE,
            stderr=errors,
        ) as proc:
            assert proc.stdout is not None
            escaping = _extract(proc.stdout, Path(tmp))
            while proc.stdout.read(1 << 16):
                pass  # drain whatever the tar reader did not consume
        errors.seek(0)
        message = " ".join(errors.read().decode(errors="replace").split())
        if proc.returncode != 0:
            where = f"{parsed.revision}:{parsed.subdir}" if parsed.subdir else parsed.revision
            raise InputError(f"{_one_line(spec)}: git could not read {where!r}: {message}")
        protos = [name for name in escaping if name.endswith(".proto")]
        if protos:
            raise InputError(
                f"{spec}: {protos[0]} is a symbolic link out of the tree; links are not followed"
            )
        yield Path(tmp)


def _extract(stream: IO[bytes], root: Path) -> list[str]:
    """Extract a tar stream under `root`; return the members refused as leaving it."""
    refused: list[str] = []
    try:
        with tarfile.open(fileobj=stream, mode="r|") as archive:
            for member in archive:
                try:
                    archive.extract(member, root, filter="data")
                except tarfile.FilterError:
                    refused.append(member.name)
    except tarfile.TarError:
        pass  # git failed before writing a tar; the caller reports git's message
    return refused
