"""Which rules run, and which findings are ignored.

Read from the current input, first match wins:

1. ``buf.yaml`` (``version: v1beta1 | v1 | v2``; the ``breaking:`` section with
   ``use``, ``except``, ``ignore``, ``ignore_only``, ``ignore_unstable_packages``
   and v2's ``disable_builtin`` and local ``policies``), exactly as buf reads it;
2. ``flare.toml`` with a ``[schema]`` (or ``[tool.flare.schema]``) table, or
   ``pyproject.toml`` with ``[tool.flare.schema]``, holding the same keys
   (plus ``version``, default v2, and ``flare = false`` to switch Flare's own
   rules off).

With no configuration at all, buf's **v1** defaults apply (category FILE as
v1 defines it), as buf does. Flare's rules (category FLARE) are on unless
switched off or excluded with ``except: [FLARE]``.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flare_codegen.errors import ConfigError
from flare_codegen.schema.findings import Finding
from flare_codegen.schema.rules import BUF_RULES, RULES_BY_ID

VERSIONS = ("v1beta1", "v1", "v2")
CATEGORIES = ("FILE", "PACKAGE", "WIRE_JSON", "WIRE", "CSR")
FLARE_CATEGORY = "FLARE"
# A package whose last component is a version like v1alpha1, v2beta, v1test.
UNSTABLE_PACKAGE = re.compile(r"^v\d+(?:p\d+)?(?:alpha|beta|test)\w*$")


@dataclass(frozen=True, slots=True)
class BreakingConfig:
    """One resolved ``breaking:`` section."""

    version: str
    rules: frozenset[str]
    flare_rules: bool = True
    ignore: tuple[str, ...] = ()
    ignore_only: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    ignore_unstable_packages: bool = False
    scope: str = ""
    """For a v2 module: its directory; the config covers only files below it."""

    def covers(self, display_path: str) -> bool:
        """True when a finding at `display_path` falls under this config."""
        return not self.scope or not display_path or display_path.startswith(self.scope + "/")

    def is_ignored(self, finding: Finding, display_path: str = "") -> bool:
        """True when the config drops `finding` (path ignores, unstable packages)."""
        paths = [p for p in (finding.path, display_path, finding.against_path) if p]
        if any(_under(path, prefix) for path in paths for prefix in self.ignore):
            return True
        for key, prefixes in self.ignore_only.items():
            if (key == finding.rule or key in self.categories_of(finding.rule)) and any(
                _under(path, prefix) for path in paths for prefix in prefixes
            ):
                return True
        if self.ignore_unstable_packages:
            for package in (finding.package, finding.against_package):
                if package is not None and is_unstable(package):
                    return True
        return False

    def categories_of(self, rule_id: str) -> tuple[str, ...]:
        if rule_id.startswith("FLARE_"):
            return (FLARE_CATEGORY,)
        rule = RULES_BY_ID.get(rule_id)
        return (rule.categories(self.version) or ()) if rule else ()


def is_unstable(package: str) -> bool:
    """buf's unstable package: its last component is an alpha, beta or test version."""
    return bool(UNSTABLE_PACKAGE.match(package.rsplit(".", 1)[-1]))


def _under(path: str, prefix: str) -> bool:
    prefix = prefix.strip("/")
    return path == prefix or path.startswith(prefix + "/") or prefix in ("", ".")


def default_config() -> BreakingConfig:
    """buf's behaviour with no buf.yaml: v1's FILE category, plus Flare's rules."""
    return BreakingConfig("v1", select_rules("v1", ["FILE"], []))


def select_rules(version: str, use: Iterable[str], excepted: Iterable[str]) -> frozenset[str]:
    """The buf rule ids that `use` minus `excepted` select under `version`.

    Category names select every rule in them; deprecated ids select their
    replacements. Raises `ConfigError` on an id this version does not know.
    """
    selected: set[str] = set()
    for name in use:
        selected |= _expand(version, name)
    for name in excepted:
        selected -= _expand(version, name)
    return frozenset(selected)


def _expand(version: str, name: str) -> set[str]:
    if name == FLARE_CATEGORY or name.startswith("FLARE_"):
        return set()
    if name in CATEGORIES:
        return {rule.id for rule in BUF_RULES if name in (rule.categories(version) or ())}
    rule = RULES_BY_ID.get(name)
    if rule is None or rule.categories(version) is None:
        raise ConfigError(f'unknown breaking rule or category "{name}" for config {version}')
    if not rule.categories(version) and rule.replacements is not None:
        # Deprecated here: buf runs its replacements instead (possibly none).
        return {r for r in rule.replacements if RULES_BY_ID[r].categories(version) is not None}
    return {name}


def _strings(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: expected a list of strings")
    return list(value)


def _bool(section: Mapping[str, Any], key: str, default: bool, where: str) -> bool:
    # A quoted "false" is a truthy string: taken as-is it would silently flip
    # the switch (disable_builtin: "false" would turn every buf rule off).
    value = section.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: {key}: expected true or false, got {value!r}")
    return value


def parse_breaking(section: Mapping[str, Any] | None, version: str, where: str) -> BreakingConfig:
    """Resolve one ``breaking:`` mapping (buf's keys) under config `version`."""
    section = section or {}
    if not isinstance(section, Mapping):
        raise ConfigError(f"{where}: breaking must be a mapping")
    known = {
        "use", "except", "ignore", "ignore_only", "ignore_unstable_packages",
        "disable_builtin", "flare", "version", "against_git_ref",
    }  # fmt: skip
    unknown = set(section) - known
    if unknown:
        raise ConfigError(f"{where}: unknown breaking key(s): {', '.join(sorted(unknown))}")
    use = _strings(section.get("use"), f"{where}: use") or ["FILE"]
    excepted = _strings(section.get("except"), f"{where}: except")
    disable_builtin = _bool(section, "disable_builtin", False, where)
    rules = frozenset() if disable_builtin else select_rules(version, use, excepted)
    flare_rules = _bool(section, "flare", True, where) and FLARE_CATEGORY not in excepted
    ignore_only_raw = section.get("ignore_only") or {}
    if not isinstance(ignore_only_raw, Mapping):
        raise ConfigError(f"{where}: ignore_only must be a mapping")
    ignore_only = {
        str(key): tuple(_strings(paths, f"{where}: ignore_only.{key}"))
        for key, paths in ignore_only_raw.items()
    }
    return BreakingConfig(
        version=version,
        rules=rules,
        flare_rules=flare_rules,
        ignore=tuple(_strings(section.get("ignore"), f"{where}: ignore")),
        ignore_only=ignore_only,
        ignore_unstable_packages=_bool(section, "ignore_unstable_packages", False, where),
    )


@dataclass(frozen=True, slots=True)
class InputConfig:
    """What a side's configuration says: the checks to run and its build roots."""

    configs: tuple[BreakingConfig, ...]
    roots: tuple[str, ...] = ()
    source: str = ""


def _read_text(path: Path) -> str:
    """A configuration file's text; it must lie in the input directory holding it.

    In CI the input is a pull request's tree: a configuration file (or a v2
    policy) that is a link to, or names, a file elsewhere would have Flare
    read it and quote it in an error.
    """
    if not path.resolve().is_relative_to(path.parent.resolve()):
        raise ConfigError(f"{path}: a symbolic link out of the input; not read")
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from exc


def _load_yaml(path: Path) -> dict[str, Any]:
    import yaml  # noqa: PLC0415 (only when a buf.yaml exists: keeps start-up fast)

    text = _read_text(path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        # One line, without the source snippet PyYAML's message quotes.
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise ConfigError(f"{where}: {problem}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def load_config(root: Path) -> InputConfig:
    """The configuration found in directory `root` (see the module docstring)."""
    buf_yaml = root / "buf.yaml"
    if buf_yaml.is_file():
        return _from_buf_yaml(buf_yaml)
    flare_toml = root / "flare.toml"
    if flare_toml.is_file():
        data = _load_toml(flare_toml)
        table = data.get("schema")
        if table is None:
            table = _tool_flare_schema(data, str(flare_toml))
        if table is not None:
            return _from_table(table, str(flare_toml))
    pyproject = root / "pyproject.toml"
    if pyproject.is_file():
        table = _tool_flare_schema(_load_toml(pyproject), str(pyproject))
        if table is not None:
            return _from_table(table, str(pyproject))
    return InputConfig((default_config(),))


def _load_toml(path: Path) -> dict[str, Any]:
    import tomllib  # noqa: PLC0415 (only when a TOML config exists: keeps start-up fast)

    text = _read_text(path)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def _tool_flare_schema(data: Mapping[str, Any], where: str) -> Any:
    """``[tool.flare.schema]`` of a TOML document, or None; a non-table on the way is an error."""
    node: Any = data
    for depth, key in enumerate(("tool", "flare")):
        node = node.get(key)
        if node is None:
            return None
        if not isinstance(node, Mapping):
            name = ".".join(("tool", "flare")[: depth + 1])
            raise ConfigError(f"{where}: {name} must be a table")
    return node.get("schema")


def _from_table(table: Any, where: str) -> InputConfig:
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where}: the schema table must be a table")
    version = str(table.get("version", "v2"))
    if version not in VERSIONS:
        raise ConfigError(f"{where}: unknown version {version!r}")
    return InputConfig((parse_breaking(table, version, where),), source=where)


def _roots(data: Mapping[str, Any], version: str, where: str) -> tuple[str, ...]:
    """Include roots: v1beta1 ``build.roots``, or v2 ``modules[].path``."""
    if version == "v1beta1":
        build = data.get("build")
        if isinstance(build, Mapping):
            return tuple(_strings(build.get("roots"), f"{where}: build.roots"))
        return ()
    if version == "v2":
        modules = data.get("modules") or []
        if not isinstance(modules, list):
            raise ConfigError(f"{where}: modules must be a list")
        paths = []
        for module in modules:
            path = module.get("path", ".") if isinstance(module, Mapping) else None
            if not isinstance(path, str):
                raise ConfigError(f"{where}: each module needs a 'path' string")
            paths.append(path.strip("/") or ".")
        return () if paths in ([], ["."]) else tuple(paths)
    return ()


def _from_buf_yaml(path: Path) -> InputConfig:
    data = _load_yaml(path)
    version = str(data.get("version", "v1beta1"))
    if version not in VERSIONS:
        raise ConfigError(f"{path}: unknown version {version!r}")
    where = str(path)
    top = data.get("breaking")
    roots = _roots(data, version, where)
    configs: list[BreakingConfig] = []
    if version == "v2" and roots:
        # Each v2 module uses its own breaking section, or the workspace's.
        for module in data.get("modules") or []:
            scope = str(module.get("path", ".")).strip("/")
            section = module.get("breaking", top)
            module_config = parse_breaking(section, version, f"{where} (module {scope})")
            configs.append(dataclasses.replace(module_config, scope="" if scope == "." else scope))
    else:
        configs.append(parse_breaking(top, version, where))
    # v2 policies: each local policy file runs with its own breaking section.
    policies = data.get("policies") or []
    if not isinstance(policies, list):
        raise ConfigError(f"{where}: policies must be a list")
    for entry in policies:
        policy_name = entry.get("policy") if isinstance(entry, Mapping) else None
        if not isinstance(policy_name, str):
            raise ConfigError(f"{where}: policies entries need a 'policy' path")
        policy_path = path.parent / policy_name
        if not policy_path.resolve().is_relative_to(path.parent.resolve()):
            raise ConfigError(f"{where}: policy {policy_name!r} is not inside the input; not read")
        if not policy_path.is_file():
            raise ConfigError(f"{where}: policy {policy_name!r} is not a local file")
        policy = _load_yaml(policy_path)
        policy_config = parse_breaking(policy.get("breaking"), "v2", str(policy_path))
        configs.append(
            BreakingConfig(
                version="v2",
                rules=policy_config.rules,
                flare_rules=False,
                ignore=configs[0].ignore,
                ignore_only=configs[0].ignore_only,
                ignore_unstable_packages=configs[0].ignore_unstable_packages,
            )
        )
    return InputConfig(tuple(configs), roots=roots, source=where)


def read_roots(root: Path) -> tuple[str, ...]:
    """Only the include roots of `root`'s buf.yaml (used for the against side)."""
    buf_yaml = root / "buf.yaml"
    if not buf_yaml.is_file():
        return ()
    data = _load_yaml(buf_yaml)
    version = str(data.get("version", "v1beta1"))
    return _roots(data, version, str(buf_yaml)) if version in VERSIONS else ()
