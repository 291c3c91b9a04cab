"""``flare describe`` against a server whose schema it has never seen (see conftest.py)."""

from __future__ import annotations

import pytest

from tests.runtime.cli.conftest import Lab

SAMPLE = """\
unseen.lab.v1.Sample is a message:
message Sample {
  string name = 1;
  int64 count = 2;
  repeated string tags = 3;
  map<string, int32> scores = 4;
  oneof choice {
    string text = 5;
    bytes blob = 6;
  }
  optional .unseen.lab.v1.Mood mood = 7;
  .google.protobuf.Timestamp at = 8;
}
"""


@pytest.mark.parametrize("scheme", ["ws", "grpc"])
def test_a_message_reads_as_its_proto_source(lab: Lab, scheme: str) -> None:
    result = lab.run("describe", lab.urls[scheme], "unseen.lab.v1.Sample")
    assert result.returncode == 0, result.stderr
    assert result.stdout == SAMPLE


@pytest.mark.parametrize("scheme", ["ws", "grpc"])
def test_a_method_an_enum_a_field_and_a_push_type(lab: Lab, scheme: str) -> None:
    result = lab.run(
        "describe",
        lab.urls[scheme],
        "unseen.lab.v1.Lab.Sum",
        "unseen.lab.v1.Mood",
        "unseen.lab.v1.Sample.scores",
        "unseen.lab.v1.Bell",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        "unseen.lab.v1.Lab.Sum is a method:\n"
        "rpc Sum ( stream .unseen.lab.v1.Number ) returns ( .unseen.lab.v1.Total ) {\n"
        "  option (flare.options.v1.method) = { route_id: 3 };\n"
        "}\n"
        "\n"
        "unseen.lab.v1.Mood is an enum:\n"
        "enum Mood {\n"
        "  MOOD_UNSPECIFIED = 0;\n"
        "  MOOD_HAPPY = 1;\n"
        "}\n"
        "\n"
        "unseen.lab.v1.Sample.scores is a field:\n"
        "map<string, int32> scores = 4;\n"
        "\n"
        "unseen.lab.v1.Bell is a message:\n"
        "message Bell {\n"
        "  option (flare.options.v1.message) = { push_type_id: 9 };\n"
        "  string text = 1;\n"
        "}\n"
    )


def test_every_service_when_no_symbol_is_given(lab: Lab) -> None:
    result = lab.run("describe", lab.urls["ws"])
    assert result.returncode == 0, result.stderr
    assert "flare.reflection.v1.Reflection is a service:" in result.stdout
    assert "unseen.lab.v1.Lab is a service:\nservice Lab {\n" in result.stdout
    assert (
        "  rpc Count ( .unseen.lab.v1.Number ) returns ( stream .unseen.lab.v1.Number ) {\n"
        in result.stdout
    )


@pytest.mark.parametrize("scheme", ["ws", "grpc"])
def test_an_unknown_symbol_is_one_line_and_exit_2(lab: Lab, scheme: str) -> None:
    result = lab.run("describe", lab.urls[scheme], "unseen.lab.v1.Nothing")
    assert result.returncode == 2
    assert result.stderr.startswith("flare describe: ")
    assert "unseen.lab.v1.Nothing" in result.stderr
    assert result.stderr.count("\n") == 1
