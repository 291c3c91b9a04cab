"""Python naming of schema elements."""

from __future__ import annotations

import pytest

from flare_codegen.names import (
    NameScope,
    flare_output_path,
    pb2_module,
    python_method_name,
    snake_case,
)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Send", "send"),
        ("SendMessage", "send_message"),
        ("HTTPRequest", "http_request"),
        ("GetV2Thing", "get_v2_thing"),
        ("already_snake", "already_snake"),
    ],
)
def test_snake_case(name: str, expected: str) -> None:
    assert snake_case(name) == expected


def test_method_names_are_never_private_or_dunder() -> None:
    assert python_method_name("__init__") == "rpc__init__"
    assert python_method_name("_Hidden") == "rpc_hidden"


def test_module_paths_follow_protoc() -> None:
    assert pb2_module("a/b/chat-service.proto") == "a.b.chat_service_pb2"
    assert flare_output_path("a/b/chat-service.proto") == "a/b/chat_service_flare.py"


def test_name_scope_escapes_keywords_and_duplicates() -> None:
    scope = NameScope({"taken"})
    assert scope.claim("class") == "class_"
    assert scope.claim("taken") == "taken_"
    assert scope.claim("send") == "send"
    assert scope.claim("send") == "send_"
    assert scope.claim("send") == "send__"
