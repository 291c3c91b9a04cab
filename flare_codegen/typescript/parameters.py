"""Typed parameters of ``protoc-gen-flare-ts`` (``--flare-ts_opt=...``).

A comma-separated list of ``name=value`` items; a bare ``name`` means
``name=true``. Unknown names and malformed values are errors.
"""

from __future__ import annotations

from dataclasses import dataclass

from flare_codegen.errors import ParameterError
from flare_codegen.parameters import Parameters
from flare_codegen.typescript.es_names import IMPORT_EXTENSIONS

DEFAULT_RUNTIME = "@flare/client"
"""The module generated code imports the Flare runtime from."""

_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


@dataclass(frozen=True, slots=True)
class TsParameters:
    """What ``protoc-gen-flare-ts`` was asked to do."""

    import_extension: str = "none"
    """How imports of ``protoc-gen-es`` output end: ``none``, ``js`` or ``ts`` (give
    ``protoc-gen-es`` the same value)."""
    runtime: str = DEFAULT_RUNTIME
    """The module specifier of the runtime package."""
    emit_empty: bool = False
    """Also write ``_flare.ts`` for files that declare no service and no push message."""
    require_ids: bool = False
    """Make a service without a Flare ``service_id`` (or a method without ``route_id``) an error."""

    def model_parameters(self) -> Parameters:
        """The parameters the shared parser takes."""
        return Parameters(emit_empty=self.emit_empty, require_ids=self.require_ids)


NAMES = ("import_extension", "runtime", "emit_empty", "require_ids")


def _flag(name: str, value: str, given: bool) -> bool:
    if not given:
        return True
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ParameterError(f"plugin parameter {name!r} takes true or false, got {value!r}")


def parse_ts_parameters(text: str) -> TsParameters:
    """Parse protoc's parameter string; raises `ParameterError` on anything unknown."""
    values: dict[str, str | bool] = {}
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        name, sep, value = item.partition("=")
        name = name.strip()
        if name not in NAMES:
            raise ParameterError(f"unknown plugin parameter {name!r} (known: {', '.join(NAMES)})")
        if name in values:
            raise ParameterError(f"plugin parameter {name!r} is given twice")
        if name == "import_extension":
            if value.strip() not in IMPORT_EXTENSIONS:
                raise ParameterError(
                    f"plugin parameter 'import_extension' takes none, js or ts, got {value!r}"
                )
            values[name] = value.strip()
        elif name == "runtime":
            if not value.strip():
                raise ParameterError("plugin parameter 'runtime' needs a module specifier")
            values[name] = value.strip()
        else:
            values[name] = _flag(name, value, bool(sep))
    defaults = TsParameters()
    return TsParameters(
        import_extension=str(values.get("import_extension", defaults.import_extension)),
        runtime=str(values.get("runtime", defaults.runtime)),
        emit_empty=bool(values.get("emit_empty", defaults.emit_empty)),
        require_ids=bool(values.get("require_ids", defaults.require_ids)),
    )
