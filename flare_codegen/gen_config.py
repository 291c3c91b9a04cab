"""``flare gen``'s configuration: what to generate from which schemas, into where.

Like buf's ``buf.gen.yaml``, one file states every input and output, so
``flare gen`` with no arguments regenerates everything and can remove the
outputs nothing generates any more (`flare_codegen.outputs`). It is the
``[gen]`` table of ``flare.toml``, or ``[tool.flare.gen]`` in ``flare.toml``
or ``pyproject.toml`` (the first found in the current directory, in that
order; ``--config FILE`` names one), as ``flare schema`` reads ``[schema]``::

    [gen]
    inputs = ["schemas"]        # schema roots: every .proto under each is generated
    includes = ["third_party"]  # more import directories (imported, not generated)
    # files = ["chat/v1/chat.proto"]   # only these (relative to an input); then no clean
    clean = true                # remove stale generated files from the outputs (default)

    [[gen.outputs]]
    language = "python"         # _pb2.py (protoc), _pb2.pyi (mypy-protobuf), _flare.py
    out = "generated"
    flare_opt = "require_ids"   # protoc-gen-flare parameters

    [[gen.outputs]]
    language = "typescript"     # _pb.ts (protoc-gen-es) and _flare.ts
    out = "web/src/gen"
    import_extension = "js"     # js (default), ts or none
    es_plugin = "node_modules/.bin/protoc-gen-es"   # default: PATH, then node_modules/.bin

Paths are relative to the file's directory. TOML rather than YAML: Python
reads it with no dependency (``tomllib``), it is what ``flare.toml`` and
``pyproject.toml`` already are, and it has no implicit typing (YAML reads
``no`` as false). An unknown key, a value of the wrong type or a missing one
is a `ConfigError` naming the file and the key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from flare_codegen.errors import ConfigError

Language = Literal["python", "typescript"]
LANGUAGES: tuple[Language, ...] = ("python", "typescript")
IMPORT_EXTENSIONS = ("js", "ts", "none")
CONFIG_FILES = ("flare.toml", "pyproject.toml")
"""Where ``flare gen`` looks for its table, in this order, in the current directory."""

_TOP_KEYS = frozenset({"inputs", "includes", "files", "clean", "outputs"})
_OUTPUT_KEYS: dict[Language, frozenset[str]] = {
    "python": frozenset({"language", "out", "flare_opt"}),
    "typescript": frozenset({"language", "out", "flare_opt", "import_extension", "es_plugin"}),
}


@dataclass(frozen=True, slots=True)
class Output:
    """One generated tree: a language and the directory it goes to."""

    language: Language
    out: Path
    flare_opt: str = ""
    """protoc-gen-flare (or -flare-ts) parameters, e.g. ``require_ids``."""
    import_extension: str = "js"
    """TypeScript: how generated imports end (``js``, ``ts`` or ``none``)."""
    es_plugin: Path | None = None
    """TypeScript: the protoc-gen-es executable; None to search PATH and node_modules/.bin."""


@dataclass(frozen=True, slots=True)
class GenConfig:
    """Everything one ``flare gen`` run generates."""

    inputs: tuple[Path, ...]
    """Schema roots; every ``.proto`` under each is generated (unless `files` is given)."""
    outputs: tuple[Output, ...]
    includes: tuple[Path, ...] = ()
    """More import directories: their files may be imported, and are not generated."""
    files: tuple[str, ...] | None = None
    """Only these ``.proto`` files, each relative to one of the inputs."""
    clean: bool = False
    """Remove generated files of the outputs that this run does not write."""
    source: str = "the command line"
    """Where the configuration came from (for messages)."""


def find_config(directory: Path) -> Path | None:
    """The first file of `CONFIG_FILES` in `directory` that holds a gen table, or None."""
    for name in CONFIG_FILES:
        path = directory / name
        if path.is_file() and _gen_table(_load_toml(path), path, required=False) is not None:
            return path
    return None


def load_config(path: Path) -> GenConfig:
    """Read the gen table of `path` (see the module docstring); raises `ConfigError`."""
    table = _gen_table(_load_toml(path), path, required=True)
    assert table is not None
    return parse_config(table, base=path.parent, source=str(path))


def parse_config(table: Mapping[str, Any], *, base: Path, source: str) -> GenConfig:
    """A `GenConfig` from a gen table whose relative paths start at `base`."""
    unknown = sorted(set(table) - _TOP_KEYS)
    if unknown:
        raise ConfigError(f"{source}: gen: unknown key {unknown[0]!r} (known: {_known(_TOP_KEYS)})")
    inputs = _paths(table, "inputs", base, source, required=True)
    if not inputs:
        raise ConfigError(f"{source}: gen.inputs: name at least one schema directory")
    files = None
    if "files" in table:
        files = tuple(_strings(table["files"], f"{source}: gen.files"))
    clean = table.get("clean", files is None)
    if not isinstance(clean, bool):
        raise ConfigError(f"{source}: gen.clean: expected true or false, got {clean!r}")
    if clean and files is not None:
        raise ConfigError(
            f"{source}: gen.clean needs every file of the inputs: drop gen.files, "
            "or set clean = false"
        )
    raw_outputs = table.get("outputs")
    if not isinstance(raw_outputs, list) or not raw_outputs:
        raise ConfigError(f"{source}: gen.outputs: expected at least one [[gen.outputs]] table")
    outputs = tuple(
        _output(item, base, f"{source}: gen.outputs[{index}]")
        for index, item in enumerate(raw_outputs)
    )
    return GenConfig(
        inputs=tuple(inputs),
        outputs=outputs,
        includes=tuple(_paths(table, "includes", base, source, required=False)),
        files=files,
        clean=clean,
        source=source,
    )


def _output(item: Any, base: Path, where: str) -> Output:
    if not isinstance(item, Mapping):
        raise ConfigError(f"{where}: expected a table")
    language = item.get("language")
    if language not in LANGUAGES:
        raise ConfigError(
            f"{where}.language: expected one of {_known(LANGUAGES)}, got {language!r}"
        )
    unknown = sorted(set(item) - _OUTPUT_KEYS[language])
    if unknown:
        known = _known(_OUTPUT_KEYS[language])
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} for {language} (known: {known})")
    out = item.get("out")
    if not isinstance(out, str) or not out:
        raise ConfigError(f"{where}.out: expected the output directory, got {out!r}")
    flare_opt = item.get("flare_opt", "")
    if not isinstance(flare_opt, str):
        raise ConfigError(f"{where}.flare_opt: expected a string, got {flare_opt!r}")
    extension = item.get("import_extension", "js")
    if extension not in IMPORT_EXTENSIONS:
        raise ConfigError(
            f"{where}.import_extension: expected one of {_known(IMPORT_EXTENSIONS)}, "
            f"got {extension!r}"
        )
    es_plugin = item.get("es_plugin")
    if es_plugin is not None and not isinstance(es_plugin, str):
        raise ConfigError(f"{where}.es_plugin: expected a path, got {es_plugin!r}")
    return Output(
        language=language,
        out=base / out,
        flare_opt=flare_opt,
        import_extension=extension,
        es_plugin=None if es_plugin is None else base / es_plugin,
    )


def _gen_table(data: Mapping[str, Any], path: Path, *, required: bool) -> Mapping[str, Any] | None:
    """The gen table of a TOML document: ``[gen]`` (flare.toml only) or ``[tool.flare.gen]``."""
    table: Any = data.get("gen") if path.name != "pyproject.toml" else None
    if table is None:
        node: Any = data
        for key in ("tool", "flare"):
            node = node.get(key) if isinstance(node, Mapping) else None
        table = node.get("gen") if isinstance(node, Mapping) else None
    if table is None:
        if required:
            where = "[tool.flare.gen]" if path.name == "pyproject.toml" else "[gen]"
            raise ConfigError(f"{path}: no {where} table")
        return None
    if not isinstance(table, Mapping):
        raise ConfigError(f"{path}: gen must be a table")
    return table


def _load_toml(path: Path) -> dict[str, Any]:
    import tomllib  # noqa: PLC0415 -- only when a configuration is read

    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"{path}: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text (byte {error.start})") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: {error}") from None


def _strings(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ConfigError(f"{where}: expected a list of strings, got {value!r}")
    return list(value)


def _paths(
    table: Mapping[str, Any], key: str, base: Path, source: str, *, required: bool
) -> list[Path]:
    if key not in table:
        if required:
            raise ConfigError(f"{source}: gen.{key}: missing (a list of directories)")
        return []
    return [base / item for item in _strings(table[key], f"{source}: gen.{key}")]


def _known(names: Any) -> str:
    return ", ".join(sorted(names)) if isinstance(names, frozenset) else ", ".join(names)
