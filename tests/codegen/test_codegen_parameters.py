"""Plugin parameter parsing."""

from __future__ import annotations

import pytest

from flare_codegen.errors import ParameterError
from flare_codegen.parameters import Parameters, parse_parameters


def test_empty_string_gives_defaults() -> None:
    assert parse_parameters("") == Parameters()


def test_line_length_parses() -> None:
    assert parse_parameters("line_length=100").line_length == 100
    assert Parameters().line_length == 88


def test_bare_name_means_true_and_values_parse() -> None:
    assert parse_parameters("emit_empty") == Parameters(emit_empty=True)
    assert parse_parameters(" require_ids=yes , emit_empty=0 ") == Parameters(
        emit_empty=False, require_ids=True
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nope", "unknown plugin parameter 'nope'"),
        ("emit_empty=perhaps", "takes true or false"),
        ("emit_empty,emit_empty", "is given twice"),
        ("line_length=wide", "takes a number from 40 to 320"),
        ("line_length=20", "takes a number from 40 to 320"),
    ],
)
def test_bad_parameters_raise(text: str, message: str) -> None:
    with pytest.raises(ParameterError, match=message):
        parse_parameters(text)
