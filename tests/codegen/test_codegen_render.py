"""Rendering details: literals and docstrings survive any text from a .proto file."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from flare_codegen.render import Imports, docstring, string_literal


@given(st.text())
def test_string_literal_round_trips(text: str) -> None:
    assert ast.literal_eval(string_literal(text)) == text


def test_string_literal_prefers_double_quotes_like_ruff() -> None:
    assert string_literal("plain") == '"plain"'
    assert string_literal("it's") == '"it\'s"'
    assert string_literal('say "hi"') == "'say \"hi\"'"


# Comments reach the renderer already cleaned (no trailing spaces, no edge blank lines).
characters = st.characters(exclude_categories=["Cs"]) | st.sampled_from('"\\ \n\t')
comment_text = st.text(characters, min_size=1).map(
    lambda text: "\n".join(line.rstrip() for line in text.split("\n")).strip("\n") or "x"
)


@given(comment_text | comment_text.filter(bool).map(lambda text: text + '"'))
def test_docstring_is_valid_python_and_keeps_the_text(text: str) -> None:
    source = "def f():\n" + "\n".join(docstring(text, "    ")) + "\n"
    tree = ast.parse(source)
    function = tree.body[0]
    assert isinstance(function, ast.FunctionDef)
    value = ast.get_docstring(function, clean=False)
    assert value is not None
    lines = value.split("\n")
    if len(lines) > 1:
        assert lines.pop() == "    "  # the closing quotes' indentation
    expected = text.split("\n")
    expected[0] = expected[0].lstrip()
    assert [lines[0]] + [line.removeprefix("    ") for line in lines[1:]] == expected


def test_imports_alias_names_that_collide_with_generated_names() -> None:
    imports = Imports({"ServiceRoutes"})
    assert imports.name("flare_runtime.routing", "ServiceRoutes") == "_ServiceRoutes"
    assert imports.name("flare_runtime.routing", "Route") == "Route"
    assert imports.pb2("a.types_pb2") == "types_pb2"
    assert imports.pb2("b.types_pb2") == "b_types_pb2"
    assert imports.render() == [
        "from a import types_pb2",
        "from b import types_pb2 as b_types_pb2",
        "from flare_runtime.routing import Route",
        "from flare_runtime.routing import ServiceRoutes as _ServiceRoutes",
    ]


def test_a_top_level_pb2_module_is_imported_plainly() -> None:
    # A .proto at the include root has no package to import from; this used to
    # render `from  import root_pb2`, a syntax error.
    imports = Imports({"root_pb2"})
    assert imports.pb2("root_pb2") == "_root_pb2"
    assert imports.pb2("other_pb2") == "other_pb2"
    imports.module("typing_extensions")
    imports.name("flare_runtime.routing", "Route")
    assert imports.render() == [
        "import other_pb2",
        "import root_pb2 as _root_pb2",
        "import typing_extensions",
        "from flare_runtime.routing import Route",
    ]


def test_a_docstring_starting_with_a_quote_is_left_alone_by_ruff_format(tmp_path: Path) -> None:
    # `""""x"""` is valid Python, but ruff format rewrites it to `""" "x"""`,
    # so generated code failed `ruff format --check` for a comment like `// "quoted"`.
    source = "".join(
        "def f():\n" + "\n".join(docstring(text, "    ")) + "\n\n\n"
        for text in ('"quoted" first', '"', '"a\n\nb"')
    ).rstrip("\n")
    path = tmp_path / "doc.py"
    path.write_text(source + "\n")
    result = subprocess.run(
        [str(Path(sys.executable).parent / "ruff"), "format", "--isolated", "--diff", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
