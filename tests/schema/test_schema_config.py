"""Configuration: buf.yaml v1/v2, flare.toml, pyproject.toml, rule selection, ignores."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from flare_codegen.errors import ConfigError
from flare_codegen.schema.config import (
    default_config,
    is_unstable,
    load_config,
    select_rules,
)
from flare_codegen.schema.rules import BUF_RULES

if TYPE_CHECKING:
    from tests.schema.conftest import Run

Pair = Callable[..., tuple[Path, Path]]

OLD = 'syntax = "proto3";\npackage a.v1;\nmessage M {\n  int32 x = 1;\n  string y = 2;\n}\n'
NEW = 'syntax = "proto3";\npackage a.v1;\nmessage M {\n  int64 x = 1;\n}\n'


def test_v1_default_is_bufs_49_rule_file_category() -> None:
    rules = default_config().rules
    assert len(rules) == 49
    assert "EXTENSION_NO_DELETE" not in rules
    assert "FIELD_SAME_DEFAULT" not in rules


def test_v2_file_category_adds_extension_and_default_rules() -> None:
    rules = select_rules("v2", ["FILE"], [])
    assert {"EXTENSION_NO_DELETE", "FIELD_SAME_DEFAULT"} <= rules
    assert len(rules) == 51


def test_deprecated_ids_expand_like_buf() -> None:
    assert select_rules("v1", ["FIELD_SAME_LABEL"], []) == {
        "FIELD_SAME_CARDINALITY",
        "FIELD_WIRE_COMPATIBLE_CARDINALITY",
        "FIELD_WIRE_JSON_COMPATIBLE_CARDINALITY",
    }
    assert select_rules("v1", ["FIELD_SAME_CTYPE"], []) == {"FIELD_SAME_CPP_STRING_TYPE"}
    assert select_rules("v1", ["MESSAGE_SAME_MESSAGE_SET_WIRE_FORMAT"], []) == frozenset()
    with pytest.raises(ConfigError, match="FIELD_SAME_LABEL"):
        select_rules("v2", ["FIELD_SAME_LABEL"], [])


def test_every_rule_has_categories_or_is_deprecated() -> None:
    for rule in BUF_RULES:
        versions = [rule.categories(v) for v in ("v1beta1", "v1", "v2")]
        assert any(v is not None for v in versions), rule.id
        assert rule.purpose


def test_unstable_packages() -> None:
    assert is_unstable("a.v1beta1")
    assert is_unstable("foo.bar.v2alpha")
    assert is_unstable("x.v1test")
    assert not is_unstable("a.v1")
    assert not is_unstable("alpha")


def test_flare_toml_and_pyproject(tmp_path: Path) -> None:
    (tmp_path / "flare.toml").write_text('[schema]\nuse = ["WIRE"]\nignore = ["legacy"]\n')
    config = load_config(tmp_path).configs[0]
    assert config.version == "v2"
    assert "FIELD_WIRE_COMPATIBLE_TYPE" in config.rules
    assert "FIELD_SAME_NAME" not in config.rules
    assert config.ignore == ("legacy",)
    (tmp_path / "flare.toml").write_text('[tool.flare.schema]\nuse = ["PACKAGE"]\n')
    assert "PACKAGE_NO_DELETE" in load_config(tmp_path).configs[0].rules
    (tmp_path / "flare.toml").unlink()
    (tmp_path / "pyproject.toml").write_text(
        '[tool.flare.schema]\nversion = "v1"\nexcept = ["FIELD_NO_DELETE", "FLARE"]\n'
    )
    config = load_config(tmp_path).configs[0]
    assert "FIELD_NO_DELETE" not in config.rules
    assert not config.flare_rules


def test_use_and_except(schema_pair: Pair, flare: Callable[..., Run]) -> None:
    current, previous = schema_pair(
        {"m.proto": NEW, "buf.yaml": "version: v1\nbreaking:\n  except: [FIELD_NO_DELETE]\n"},
        {"m.proto": OLD},
    )
    run = flare("schema", "check", str(current), "--against", str(previous), "--format", "json")
    assert run.rules() == {"FIELD_SAME_TYPE"}


def test_wire_category_allows_wire_compatible_change(
    schema_pair: Pair, flare: Callable[..., Run]
) -> None:
    current, previous = schema_pair(
        {"m.proto": NEW, "buf.yaml": "version: v2\nbreaking:\n  use: [WIRE]\n"}, {"m.proto": OLD}
    )
    run = flare("schema", "check", str(current), "--against", str(previous), "--format", "json")
    # int32 -> int64 is wire compatible; deleting field 2 without reserving it is not.
    assert run.rules() == {"FIELD_NO_DELETE_UNLESS_NUMBER_RESERVED"}


def test_ignore_and_ignore_only_paths(schema_pair: Pair, flare: Callable[..., Run]) -> None:
    config = (
        "version: v1\nbreaking:\n  ignore_only:\n    FIELD_SAME_TYPE: [legacy]\n"
        "  ignore: [vendor]\n"
    )
    current, previous = schema_pair(
        {"legacy/m.proto": NEW, "vendor/m.proto": NEW.replace("a.v1", "b.v1"), "buf.yaml": config},
        {"legacy/m.proto": OLD, "vendor/m.proto": OLD.replace("a.v1", "b.v1")},
    )
    run = flare("schema", "check", str(current), "--against", str(previous), "--format", "json")
    assert {(f["type"], f["path"]) for f in run.findings()} == {
        ("FIELD_NO_DELETE", "legacy/m.proto")
    }


def test_ignore_unstable_packages(schema_pair: Pair, flare: Callable[..., Run]) -> None:
    beta_old, beta_new = OLD.replace("a.v1", "a.v1beta1"), NEW.replace("a.v1", "a.v1beta1")
    current, previous = schema_pair(
        {
            "m.proto": beta_new,
            "buf.yaml": "version: v1\nbreaking:\n  ignore_unstable_packages: true\n",
        },
        {"m.proto": beta_old},
    )
    run = flare("schema", "check", str(current), "--against", str(previous))
    assert (run.code, run.out) == (0, "")


@pytest.mark.parametrize(
    ("buf_yaml", "message"),
    [
        (
            "version: v1\nbreaking:\n  use: [NOT_A_RULE]\n",
            'unknown breaking rule or category "NOT_A_RULE"',
        ),
        ("version: v9\n", "unknown version 'v9'"),
        ("version: v1\nbreaking:\n  usee: [FILE]\n", "unknown breaking key(s): usee"),
        ("version: v1\nbreaking: [\n", "buf.yaml"),
        # A quoted "false" is a string, not a boolean: it must not silently
        # switch every builtin rule off (or Flare's rules on).
        (
            'version: v2\nbreaking:\n  disable_builtin: "false"\n',
            "disable_builtin: expected true or false",
        ),
        (
            "version: v1\nbreaking:\n  ignore_unstable_packages: 1\n",
            "ignore_unstable_packages: expected true or false",
        ),
        ("version: v2\npolicies: 5\n", "policies must be a list"),
    ],
)
def test_bad_configuration_is_a_clear_error(
    buf_yaml: str, message: str, schema_pair: Pair, flare: Callable[..., Run]
) -> None:
    current, previous = schema_pair({"m.proto": NEW, "buf.yaml": buf_yaml}, {"m.proto": OLD})
    run = flare("schema", "check", str(current), "--against", str(previous))
    assert run.code == 1
    assert message in run.err


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("flare.toml", "tool = 3\n", "tool must be a table"),
        ("flare.toml", "[tool]\nflare = 3\n", "tool.flare must be a table"),
        ("pyproject.toml", 'tool = "x"\n', "tool must be a table"),
        ("pyproject.toml", '[tool.flare.schema]\nflare = "false"\n', "flare: expected true"),
    ],
)
def test_bad_toml_configuration_is_a_clear_error(
    name: str, text: str, message: str, schema_pair: Pair, flare: Callable[..., Run]
) -> None:
    current, previous = schema_pair({"m.proto": NEW, name: text}, {"m.proto": OLD})
    run = flare("schema", "check", str(current), "--against", str(previous))
    assert run.code == 1
    assert message in run.err


def test_v2_modules_are_include_roots_with_their_own_rules(
    schema_pair: Pair, flare: Callable[..., Run]
) -> None:
    buf_yaml = (
        "version: v2\nmodules:\n  - path: proto\n  - path: other\n"
        "    breaking:\n      use: [WIRE]\n"
    )
    b = 'syntax = "proto3";\npackage a.v1;\nmessage B {\n  int32 x = 1;\n}\n'
    a = (
        'syntax = "proto3";\npackage a.v1;\nimport "a/v1/b.proto";\n'
        "message A {\n  B b = 1;\n  int32 n = 2;\n}\n"
    )
    c = 'syntax = "proto3";\npackage c.v1;\nmessage C {\n  int32 x = 1;\n  string name = 2;\n}\n'
    previous = {
        "buf.yaml": buf_yaml,
        "proto/a/v1/b.proto": b,
        "proto/a/v1/a.proto": a,
        "other/c.proto": c,
    }
    current = {
        **previous,
        "proto/a/v1/a.proto": a.replace("int32 n", "int64 n"),
        # wire-compatible under the `other` module's own WIRE rules
        "other/c.proto": c.replace("int32 x", "int64 x").replace("name = 2", "nom = 2"),
    }
    cur, prev = schema_pair(current, previous)
    run = flare("schema", "check", str(cur), "--against", str(prev), "--format", "json")
    assert [(f["type"], f["path"], f["start_line"]) for f in run.findings()] == [
        ("FIELD_SAME_TYPE", "proto/a/v1/a.proto", 6)
    ]
