"""Typed plugin parameters (``--flare_opt=...`` or ``--flare_out=PARAMS:DIR``).

The parameter string is a comma-separated list of ``name=value`` items; a bare
``name`` means ``name=true``. Unknown names and malformed values are errors,
so a typo never silently changes the output.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from flare_codegen.errors import ParameterError

_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


@dataclass(frozen=True, slots=True)
class Parameters:
    """What the plugin was asked to do."""

    emit_empty: bool = False
    """Also write ``_flare.py`` for files that declare no service and no push message."""
    require_ids: bool = False
    """Make a service without a Flare ``service_id`` (or a method without ``route_id``) an error."""
    line_length: int = 88
    """The ruff line length the output is laid out for (``ruff format`` leaves it unchanged)."""


LINE_LENGTH_RANGE = range(40, 321)


PARAMETER_NAMES: tuple[str, ...] = tuple(field.name for field in dataclasses.fields(Parameters))


def _parse_bool(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ParameterError(f"plugin parameter {name!r} takes true or false, got {value!r}")


def _parse_line_length(value: str) -> int:
    try:
        number = int(value.strip())
    except ValueError:
        number = 0
    if number not in LINE_LENGTH_RANGE:
        raise ParameterError(
            f"plugin parameter 'line_length' takes a number from {LINE_LENGTH_RANGE.start} "
            f"to {LINE_LENGTH_RANGE.stop - 1}, got {value!r}"
        )
    return number


def parse_parameters(text: str) -> Parameters:
    """Parse protoc's parameter string; raises `ParameterError` on anything unknown."""
    flags: dict[str, bool] = {}
    line_length: int | None = None
    seen: set[str] = set()
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        name, sep, value = item.partition("=")
        name = name.strip()
        if name not in PARAMETER_NAMES:
            known = ", ".join(PARAMETER_NAMES)
            raise ParameterError(f"unknown plugin parameter {name!r} (known: {known})")
        if name in seen:
            raise ParameterError(f"plugin parameter {name!r} is given twice")
        seen.add(name)
        if name == "line_length":
            line_length = _parse_line_length(value)
        else:
            flags[name] = _parse_bool(name, value) if sep else True
    defaults = Parameters()
    return Parameters(
        emit_empty=flags.get("emit_empty", defaults.emit_empty),
        require_ids=flags.get("require_ids", defaults.require_ids),
        line_length=defaults.line_length if line_length is None else line_length,
    )
