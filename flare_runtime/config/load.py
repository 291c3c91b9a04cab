"""Reading the configuration: file, then ``FLARE_*`` environment, then flags.

::

    loaded = load_config(None, env=os.environ, flags={"listen.websocket": (":8080", "--ws")})
    loaded.config.listen            # {"websocket": ":8080", ...}
    loaded.sources["listen.websocket"]   # "--ws"
    print(print_config(loaded))     # TOML, secrets masked

Where the file comes from: `path` when given (``--config FILE``: a
``flare.toml``, or a ``pyproject.toml`` whose ``[tool.flare]`` table is
read); else ``./flare.toml``; else ``./pyproject.toml`` when its
``[tool.flare]`` has a key of ``flare serve``'s; else none (defaults,
environment and flags only).

Precedence, lowest first: the schema's defaults, the file, the environment
(``FLARE_LIMITS_CLOSE_TIMEOUT=2``, named by `Key.env`; lists are
comma-separated, tables ``name=value`` pairs comma-separated; an empty value
unsets an optional key), the flags. Every key is checked: an unknown key in
the file is an error naming the file and the key (with the closest known key
when one is close), a value of the wrong type names the file, the key, the
type expected and the value (never a secret's value); the option classes'
own checks (`ServerOptions`, `ProtocolConfig`...) run too. Errors are
`ConfigError`, one line each. Tables other commands own (``[gen]``,
``[schema]``) are left to them. Unknown ``FLARE_*`` variables are ignored
(other programs use the prefix too).
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import math
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from flare_runtime.config.schema import (
    FOREIGN_TABLES,
    FlareConfig,
    Key,
    keys,
    table_class,
    tables,
    type_hints,
)
from flare_runtime.errors import ConfigurationError

CONFIG_FILE = "flare.toml"
PYPROJECT = "pyproject.toml"
MASK = "***"


class ConfigError(ConfigurationError):
    """A configuration that cannot be used; the message names where and which key."""


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    """A configuration as loaded, with where each value came from."""

    config: FlareConfig
    file: Path | None
    """The file read (None: none)."""
    values: dict[str, Any]
    """Dotted key -> effective value, for every key."""
    sources: dict[str, str] = field(default_factory=dict)
    """Dotted key -> where its value came from (a file, ``env FLARE_...``, a flag); keys
    left at their default are absent."""


FlagValues = Mapping[str, tuple[Any, str]]
"""Dotted key -> (value, the flag that gave it); values are typed, or strings (``--set``)."""


def schema_keys() -> dict[str, Key]:
    """Every key of the schema by dotted path."""
    return {key.path: key for key in keys()}


def find_config_file(directory: Path) -> Path | None:
    """``flare.toml`` in `directory`, else a ``pyproject.toml`` with serve keys, else None."""
    candidate = directory / CONFIG_FILE
    if candidate.is_file():
        return candidate
    candidate = directory / PYPROJECT
    if candidate.is_file():
        table = _tool_flare(_read_toml(candidate), candidate)
        if table is not None and any(name not in FOREIGN_TABLES for name in table):
            return candidate
    return None


def load_config(
    path: Path | None,
    *,
    env: Mapping[str, str],
    flags: FlagValues | None = None,
    directory: Path | None = None,
) -> LoadedConfig:
    """Load the configuration (see the module docstring); `ConfigError` when it is wrong."""
    known = schema_keys()
    values: dict[str, Any] = {path: key.default for path, key in known.items()}
    sources: dict[str, str] = {}
    file = path if path is not None else find_config_file(directory or Path.cwd())
    if file is not None:
        for dotted, value in _file_values(file, known).items():
            values[dotted] = value
            sources[dotted] = str(file)
    for dotted, key in known.items():
        text = env.get(key.env)
        if text is not None:
            values[dotted] = _parse_text(key, text, f"environment {key.env}")
            sources[dotted] = f"env {key.env}"
    for dotted, (value, flag) in (flags or {}).items():
        parent, _, entry = dotted.rpartition(".")
        if (
            dotted not in known
            and typing.get_origin(getattr(known.get(parent), "type", None)) is dict
        ):
            # One entry of a table-valued key (``--ws`` is ``listen.websocket``).
            values[parent] = {
                **values[parent],
                entry: _check(known[parent], {entry: value}, flag)[entry],
            }
            sources[parent] = flag if parent not in sources else f"{sources[parent]}, {flag}"
            continue
        flagged = known.get(dotted)
        if flagged is None:
            raise ConfigError(f"{flag}: unknown key {dotted!r}{_did_you_mean(dotted, known)}")
        key = flagged
        where = f"{flag} {dotted}" if flag == "--set" else flag
        if isinstance(value, str) and not _accepts_str(key.type):
            values[dotted] = _parse_text(key, value, where)
        else:
            values[dotted] = _check(key, value, where)
        sources[dotted] = where
    _check_transports(values["listen"], sources.get("listen", "listen"))
    _check_addresses(values, sources)
    config = _build(FlareConfig, "", values, sources)
    return LoadedConfig(config, file, values, sources)


# ------------------------------------------------------------------ the file


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"{path}: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None


def _tool_flare(data: Mapping[str, Any], path: Path) -> Mapping[str, Any] | None:
    tool = data.get("tool")
    if not isinstance(tool, Mapping):
        return None
    table = tool.get("flare")
    if table is None:
        return None
    if not isinstance(table, Mapping):
        raise ConfigError(f"{path}: tool.flare must be a table")
    return table


def _file_values(path: Path, known: Mapping[str, Key]) -> dict[str, Any]:
    data = _read_toml(path)
    if path.name == PYPROJECT:
        table = _tool_flare(data, path)
        if table is None:
            raise ConfigError(f"{path}: no [tool.flare] table")
        prefix_shown = "tool.flare."
        foreign = FOREIGN_TABLES
    else:
        table = data
        prefix_shown = ""
        foreign = FOREIGN_TABLES | {"tool"}
    found: dict[str, Any] = {}
    table_paths = {t.path for t in tables()}

    def walk(node: Mapping[str, Any], prefix: str) -> None:
        for name, value in node.items():
            dotted = f"{prefix}.{name}" if prefix else name
            if not prefix and name in foreign:
                continue
            shown = prefix_shown + dotted
            if dotted in table_paths:
                if not isinstance(value, Mapping):
                    raise ConfigError(f"{path}: {shown}: expected a table, got {value!r}")
                walk(value, dotted)
                continue
            key = known.get(dotted)
            if key is None:
                siblings = [k for k in (*known, *table_paths) if k.rpartition(".")[0] == prefix]
                hint = _did_you_mean(dotted, siblings)
                raise ConfigError(f"{path}: unknown key {shown!r}{hint}")
            found[dotted] = _check(key, value, f"{path}: {shown}")

    walk(table, "")
    return found


# ------------------------------------------------------------------ values


def type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    arguments = typing.get_args(annotation)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in arguments)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in arguments if a is not type(None))
    if origin is list:
        return "a list of strings"
    if origin is dict:
        return "a table of strings"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return "one of " + ", ".join(repr(m.value) for m in annotation)
    return names.get(annotation, str(annotation))


def _shown(key: Key, value: Any) -> str:
    return MASK if key.secret else repr(value)


def _check(key: Key, value: Any, where: str) -> Any:
    """`value` as `key`'s type, or ConfigError naming `where` (file and key, or flag)."""
    ok, converted = _convert(key.type, value)
    if not ok:
        raise ConfigError(f"{where}: expected {type_name(key.type)}, got {_shown(key, value)}")
    return converted


def _convert(annotation: Any, value: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(annotation)
    arguments = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in arguments:
            return True, None
        for argument in arguments:
            if argument is type(None):
                continue
            ok, converted = _convert(argument, value)
            if ok:
                return True, converted
        return False, None
    if origin is Literal:
        return (value in arguments and not isinstance(value, bool)), value
    if annotation is bool:
        return isinstance(value, bool), value
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return math.isfinite(value) or value == math.inf, float(value)
        return False, None
    if annotation is str:
        return isinstance(value, str), value
    if origin is list:
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            return True, list(value)
        return False, None
    if origin is dict:
        if isinstance(value, Mapping) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            return True, dict(value)
        return False, None
    return False, None


def _accepts_str(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if annotation is str:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_accepts_str(a) for a in typing.get_args(annotation))
    return False


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _parse_text(key: Key, text: str, where: str) -> Any:
    """A value given as text (environment, ``--set``) as `key`'s type."""
    annotation = key.type
    arguments = typing.get_args(annotation)
    origin = typing.get_origin(annotation)
    if text == "" and type(None) in arguments:
        return None
    candidates: list[Any] = []
    for kind in arguments if origin in (typing.Union, types.UnionType) else (annotation,):
        candidates += _text_candidates(kind, text)
    for candidate in candidates:
        ok, converted = _convert(annotation, candidate)
        if ok:
            return converted
    raise ConfigError(f"{where}: expected {type_name(annotation)}, got {_shown(key, text)}")


def _text_candidates(kind: Any, text: str) -> list[Any]:
    origin = typing.get_origin(kind)
    stripped = text.strip()
    if kind is bool:
        lowered = stripped.lower()
        return [True] if lowered in _TRUE else [False] if lowered in _FALSE else []
    if kind is int:
        try:
            return [int(stripped)]
        except ValueError:
            return []
    if kind is float:
        try:
            return [float(stripped)]
        except ValueError:
            return []
    if origin is list:
        return [[item.strip() for item in text.split(",") if item.strip()]]
    if origin is dict:
        pairs: dict[str, str] = {}
        for item in text.split(","):
            if not item.strip():
                continue
            name, sep, value = item.partition("=")
            if not sep or not name.strip():
                return []
            pairs[name.strip()] = value.strip()
        return [pairs]
    return [text]


def _did_you_mean(name: str, choices: Any) -> str:
    leaf = name.rpartition(".")[2]
    options = {str(choice).rpartition(".")[2]: str(choice) for choice in choices}
    close = difflib.get_close_matches(leaf, list(options), n=1, cutoff=0.6)
    if not close:
        close = difflib.get_close_matches(name, [str(c) for c in choices], n=1, cutoff=0.6)
        return f" (did you mean {close[0]!r}?)" if close else ""
    return f" (did you mean {options[close[0]]!r}?)"


def _check_transports(listen: Mapping[str, str], where: str) -> None:
    from flare_runtime.transport_registry import REGISTRY  # noqa: PLC0415

    names = REGISTRY.names()
    for name in listen:
        if name not in names:
            hint = _did_you_mean(name, names)
            raise ConfigError(
                f"unknown transport {name!r}: known transports are {', '.join(names)} "
                f"(listen.{name}, from {where}){hint}"
            )


def _check_addresses(values: Mapping[str, Any], sources: Mapping[str, str]) -> None:
    from flare_runtime.server import parse_address  # noqa: PLC0415

    addresses = [
        (f"listen.{name}", address, "listen") for name, address in values["listen"].items()
    ]
    if values["metrics.listen"] is not None:
        addresses.append(("metrics.listen", values["metrics.listen"], "metrics.listen"))
    for dotted, address, key in addresses:
        try:
            parse_address(address)
        except ConfigurationError as error:
            raise ConfigError(f"{dotted}: {error} (from {sources.get(key, 'defaults')})") from None


# ------------------------------------------------------------------ objects


def _build(
    cls: type[Any], prefix: str, values: Mapping[str, Any], sources: Mapping[str, str]
) -> Any:
    hints = type_hints(cls)
    arguments: dict[str, Any] = {}
    given: list[str] = []
    for item in dataclasses.fields(cls):
        dotted = f"{prefix}.{item.name}" if prefix else item.name
        nested = table_class(dotted, hints[item.name])
        if nested is not None:
            arguments[item.name] = _build(nested, dotted, values, sources)
        elif dotted in values:
            value = values[dotted]
            arguments[item.name] = _as_field(hints[item.name], value)
            if dotted in sources:
                given.append(f"{dotted} from {sources[dotted]}")
    try:
        return cls(**arguments)
    except (ValueError, TypeError, ConfigurationError) as error:
        where = "; ".join(given) if given else "defaults"
        raise ConfigError(f"[{prefix}]: {error} ({where})") from None


def _as_field(annotation: Any, value: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return annotation(value)
    return value


# ------------------------------------------------------------------ printing


def mask(key: Key, value: Any) -> Any:
    """`value` as ``--print-config`` shows it: a secret masked (a URL keeps all but its
    password)."""
    if value is None or not key.secret:
        return value
    if key.secret == "url" and isinstance(value, str):
        return mask_url(value)
    if isinstance(value, dict):
        return {name: MASK for name in value}
    return MASK


def mask_url(url: str) -> str:
    """`url` with its password (if any) replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{user}:{MASK}@{host}"))


def secrets(loaded: LoadedConfig) -> list[str]:
    """Every secret value of `loaded` (keys, tokens, URL passwords): what logs redact."""
    found: list[str] = []
    for key in schema_keys().values():
        value = loaded.values.get(key.path)
        if not key.secret or value is None:
            continue
        if isinstance(value, dict):
            found += [v for v in value.values() if isinstance(v, str)]
        elif key.secret == "url" and isinstance(value, str):
            try:
                password = urlsplit(value).password
            except ValueError:
                password = None
            if password:
                found.append(password)
        elif isinstance(value, str):
            found.append(value)
    return found


def print_config(loaded: LoadedConfig) -> str:
    """The effective configuration as TOML, secrets masked, each value set by something
    other than the defaults followed by a comment saying what set it."""
    known = schema_keys()
    lines = [
        "# flare serve: effective configuration"
        + (f" (file: {loaded.file})" if loaded.file else " (no file)"),
    ]
    by_table: dict[str, list[Key]] = {}
    for key in known.values():
        by_table.setdefault(key.table, []).append(key)
    for table in tables():
        entries = by_table.get(table.path, [])
        if not entries:
            continue
        if table.path:
            lines += ["", f"[{table.path}]"]
        for key in entries:
            value = mask(key, loaded.values[key.path])
            source = loaded.sources.get(key.path)
            comment = f"  # {source}" if source else ""
            if value is None:
                lines.append(f"# {key.name} = (unset){comment}")
            else:
                lines.append(f"{key.name} = {toml_value(value)}{comment}")
    return "\n".join(lines) + "\n"


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, enum.Enum):
        return toml_value(value.value)
    if isinstance(value, float):
        if math.isinf(value):
            return "inf"
        return repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, Mapping):
        inner = ", ".join(f"{_toml_key(k)} = {toml_value(v)}" for k, v in value.items())
        return "{" + inner + "}"
    return toml_value(str(value))


def _toml_key(name: str) -> str:
    if name and all(c.isalnum() or c in "-_" for c in name):
        return name
    return toml_value(name)
