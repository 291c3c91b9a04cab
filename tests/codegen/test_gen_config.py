"""`flare_codegen.gen_config`: the gen table of flare.toml / pyproject.toml, and its errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from flare_codegen.errors import ConfigError
from flare_codegen.gen_config import GenConfig, Output, find_config, load_config

FULL = """\
[gen]
inputs = ["schemas", "more"]
includes = ["third_party"]

[[gen.outputs]]
language = "python"
out = "generated"
flare_opt = "require_ids"

[[gen.outputs]]
language = "typescript"
out = "web/gen"
import_extension = "ts"
es_plugin = "node_modules/.bin/protoc-gen-es"
"""
PYTHON = "[[gen.outputs]]\nlanguage = 'python'\nout = 'o'\n"


def test_a_full_table_with_paths_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "flare.toml").write_text(FULL)
    config = load_config(tmp_path / "flare.toml")
    assert config == GenConfig(
        inputs=(tmp_path / "schemas", tmp_path / "more"),
        outputs=(
            Output("python", tmp_path / "generated", flare_opt="require_ids"),
            Output(
                "typescript",
                tmp_path / "web/gen",
                import_extension="ts",
                es_plugin=tmp_path / "node_modules/.bin/protoc-gen-es",
            ),
        ),
        includes=(tmp_path / "third_party",),
        clean=True,
        source=str(tmp_path / "flare.toml"),
    )


def test_found_in_flare_toml_then_pyproject(tmp_path: Path) -> None:
    assert find_config(tmp_path) is None
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\nname = "x"\n')
    assert find_config(tmp_path) is None
    pyproject.write_text(
        FULL.replace("[gen]", "[tool.flare.gen]").replace("gen.outputs", "tool.flare.gen.outputs")
    )
    assert find_config(tmp_path) == pyproject
    assert load_config(pyproject).inputs[0] == tmp_path / "schemas"
    (tmp_path / "flare.toml").write_text("[schema]\nversion = 'v2'\n")  # schema CI's table only
    assert find_config(tmp_path) == pyproject
    (tmp_path / "flare.toml").write_text(FULL)
    assert find_config(tmp_path) == tmp_path / "flare.toml"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[gen]\ninput = ['s']\n",
            "gen: unknown key 'input' (known: clean, files, includes, inputs, outputs)",
        ),
        ("[gen]\noutputs = []\n", "gen.inputs: missing (a list of directories)"),
        ("[gen]\ninputs = 's'\n", "gen.inputs: expected a list of strings, got 's'"),
        ("[gen]\ninputs = []\n", "gen.inputs: name at least one schema directory"),
        ("[gen]\ninputs = ['s']\n", "gen.outputs: expected at least one [[gen.outputs]] table"),
        (
            "[gen]\ninputs = ['s']\nclean = 'yes'\n" + PYTHON,
            "gen.clean: expected true or false, got 'yes'",
        ),
        (
            "[gen]\ninputs = ['s']\n[[gen.outputs]]\nlanguage = 'go'\nout = 'o'\n",
            "gen.outputs[0].language: expected one of python, typescript, got 'go'",
        ),
        (
            "[gen]\ninputs = ['s']\n[[gen.outputs]]\nlanguage = 'python'\n",
            "gen.outputs[0].out: expected the output directory, got None",
        ),
        (
            "[gen]\ninputs = ['s']\n" + PYTHON + "es_plugin = 'x'\n",
            "gen.outputs[0]: unknown key 'es_plugin' for python (known: flare_opt, language, out)",
        ),
        (
            "[gen]\ninputs = ['s']\n"
            + PYTHON.replace("python", "typescript")
            + "import_extension = 'mjs'\n",
            "gen.outputs[0].import_extension: expected one of js, ts, none, got 'mjs'",
        ),
        (
            "[gen]\ninputs = ['s']\nfiles = ['a.proto']\nclean = true\n" + PYTHON,
            "gen.clean needs every file of the inputs",
        ),
        ("gen = 5\n", "gen must be a table"),
        ("[gen\n", "Expected ']'"),
        ("[schema]\n", "no [gen] table"),
    ],
)
def test_every_mistake_names_the_file_and_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "flare.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.message.startswith(f"{path}: ")
    assert message in caught.value.message


def test_files_turn_clean_off_by_default(tmp_path: Path) -> None:
    path = tmp_path / "flare.toml"
    path.write_text("[gen]\ninputs = ['s']\nfiles = ['a.proto']\n" + PYTHON)
    config = load_config(path)
    assert (config.files, config.clean) == (("a.proto",), False)
