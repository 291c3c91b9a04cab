"""Output formats (text, json, github-actions, junit), ignore comments and rename hints."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.schema.conftest import Run

Pair = Callable[..., tuple[Path, Path]]


@pytest.fixture
def breaking_pair(chat_proto: str, schema_pair: Pair) -> tuple[Path, Path]:
    """Two breaking changes: a field type and a route id."""
    changed = chat_proto.replace("uint64 seq", "string seq").replace("route_id: 3}", "route_id: 4}")
    return schema_pair({"chat.proto": changed}, {"chat.proto": chat_proto})


def check(flare: Callable[..., Run], pair: tuple[Path, Path], fmt: str) -> Run:
    current, previous = pair
    return flare("schema", "check", str(current), "--against", str(previous), "--format", fmt)


def test_text_format_is_bufs(breaking_pair: tuple[Path, Path], flare: Callable[..., Run]) -> None:
    run = check(flare, breaking_pair, "text")
    assert run.code == 100
    lines = run.out.splitlines()
    assert len(lines) == 2
    assert all(re.fullmatch(r"chat\.proto:\d+:\d+:.+", line) for line in lines)
    assert lines[0].startswith('chat.proto:12:3:Field "1" with name "seq" on message "SendReply"')


def test_json_format_has_exactly_bufs_keys(
    breaking_pair: tuple[Path, Path], flare: Callable[..., Run]
) -> None:
    run = check(flare, breaking_pair, "json")
    objects = [json.loads(line) for line in run.out.splitlines()]
    assert [o["type"] for o in objects] == ["FIELD_SAME_TYPE", "FLARE_ROUTE_ID_SAME"]
    for obj in objects:
        assert set(obj) == {
            "path", "start_line", "start_column", "end_line", "end_column", "type", "message",
        }  # fmt: skip
        assert obj["start_line"] <= obj["end_line"]


def test_github_actions_format(breaking_pair: tuple[Path, Path], flare: Callable[..., Run]) -> None:
    run = check(flare, breaking_pair, "github-actions")
    lines = run.out.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("::error file=chat.proto,line=12,col=3,endLine=12,endColumn=")
    assert "title=FIELD_SAME_TYPE::" in lines[0]


def test_junit_format(breaking_pair: tuple[Path, Path], flare: Callable[..., Run]) -> None:
    run = check(flare, breaking_pair, "junit")
    suite = ET.fromstring(run.out).find("testsuite")
    assert suite is not None
    assert suite.get("failures") == "2"
    failures = [case.find("failure") for case in suite.iter("testcase")]
    assert {f.get("type") for f in failures if f is not None} == {
        "FIELD_SAME_TYPE",
        "FLARE_ROUTE_ID_SAME",
    }


def test_junit_clean_run_has_a_passing_case(
    chat_proto: str, schema_pair: Pair, flare: Callable[..., Run]
) -> None:
    pair = schema_pair({"chat.proto": chat_proto}, {"chat.proto": chat_proto})
    run = check(flare, pair, "junit")
    assert run.code == 0
    suite = ET.fromstring(run.out).find("testsuite")
    assert suite is not None and suite.get("failures") == "0"


IGNORED_ROUTE = """  rpc Ping(SendRequest) returns (SendReply) {
    // flare:breaking-ignore FLARE_ROUTE_ID_SAME no client calls Ping yet
    option (flare.options.v1.method) = {route_id: 4};
  }"""
ORIGINAL_ROUTE = """  rpc Ping(SendRequest) returns (SendReply) {
    option (flare.options.v1.method) = {route_id: 3};
  }"""


@pytest.mark.parametrize("fmt", ["text", "json", "github-actions", "junit"])
def test_ignore_comment_silences_and_reports_ignored(
    fmt: str, chat_proto: str, schema_pair: Pair, flare: Callable[..., Run]
) -> None:
    current = chat_proto.replace(ORIGINAL_ROUTE, IGNORED_ROUTE)
    pair = schema_pair({"chat.proto": current}, {"chat.proto": chat_proto})
    run = check(flare, pair, fmt)
    assert run.code == 0
    shown = run.out + run.err
    assert "ignored" in shown
    assert "no client calls Ping yet" in shown
    if fmt == "json":
        assert run.out == ""
        [note] = [json.loads(line) for line in run.err.splitlines()]
        assert (note["type"], note["ignored"]) == (
            "FLARE_ROUTE_ID_SAME",
            "no client calls Ping yet",
        )


def test_ignore_comment_on_a_message_covers_its_fields(
    chat_proto: str, schema_pair: Pair, flare: Callable[..., Run]
) -> None:
    current = chat_proto.replace("uint64 seq", "string seq").replace(
        "message SendReply {",
        "// flare:breaking-ignore FIELD_SAME_TYPE seq is opaque now\nmessage SendReply {",
    )
    pair = schema_pair({"chat.proto": current}, {"chat.proto": chat_proto})
    run = check(flare, pair, "text")
    assert (run.code, run.out) == (0, "")
    assert "ignored FIELD_SAME_TYPE (seq is opaque now)" in run.err


@pytest.mark.parametrize(
    "comment",
    [
        "// flare:breaking-ignore FLARE_ROUTE_ID_SAME",  # no reason
        "// flare:breaking-ignore FIELD_SAME_TYPE wrong rule id",
    ],
)
def test_ignore_comment_needs_the_rule_and_a_reason(
    comment: str, chat_proto: str, schema_pair: Pair, flare: Callable[..., Run]
) -> None:
    current = chat_proto.replace(ORIGINAL_ROUTE, IGNORED_ROUTE.replace(
        "// flare:breaking-ignore FLARE_ROUTE_ID_SAME no client calls Ping yet", comment
    ))  # fmt: skip
    pair = schema_pair({"chat.proto": current}, {"chat.proto": chat_proto})
    run = check(flare, pair, "json")
    assert run.code == 100
    assert run.rules() == {"FLARE_ROUTE_ID_SAME"}


def test_rename_hint_for_wire_compatible_message_rename(
    chat_proto: str, schema_pair: Pair, flare: Callable[..., Run]
) -> None:
    renamed = chat_proto.replace("message Joined {", "message UserJoined {")
    pair = schema_pair({"chat.proto": renamed}, {"chat.proto": chat_proto})
    run = check(flare, pair, "text")
    assert run.code == 100
    assert 'Previously present message "Joined" was deleted from file.' in run.out
    assert 'hint: chat.proto: message "chat.v1.UserJoined" looks like a rename' in run.err


def test_no_rename_hint_when_fields_differ(
    chat_proto: str, schema_pair: Pair, flare: Callable[..., Run]
) -> None:
    renamed = chat_proto.replace("message Joined {", "message UserJoined {").replace(
        "  string user = 1;\n}\n\nservice", "  int32 user = 1;\n}\n\nservice"
    )
    pair = schema_pair({"chat.proto": renamed}, {"chat.proto": chat_proto})
    run = check(flare, pair, "text")
    assert "hint" not in run.err
