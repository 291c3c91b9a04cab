"""``flare routes``: the routing table of a schema directory or a descriptor set."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import descriptor_pb2

from flare_codegen.compiler import compile_directory
from flare_runtime.cli import main

SCHEMAS = Path(__file__).resolve().parents[3] / "schemas"


def _routes_json(target: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    assert main(["routes", str(target), "--json"]) == 0
    data: dict[str, Any] = json.loads(capsys.readouterr().out)
    return data


def test_json_table_of_the_example_schema(capsys: pytest.CaptureFixture[str]) -> None:
    data = _routes_json(SCHEMAS, capsys)
    services = {service["name"]: service for service in data["services"]}
    chat = services["examples.chat.v1.ChatService"]
    assert chat["service_id"] == 1
    assert chat["reserved_route_ids"] == [[10, 12]]
    send = chat["routes"][0]
    assert send == {
        "path": "/examples.chat.v1.ChatService/Send",
        "name": "Send",
        "route_id": 1,
        "wire_id": 1 << 16 | 1,
        "cardinality": "unary",
        "request_type": "examples.chat.v1.SendRequest",
        "response_type": "examples.chat.v1.SendReply",
        "handler_name": "send",
        "options": {
            "idempotent": True,
            "auth": "authenticated",
            "scopes": ["chat.write"],
            "default_timeout": 5.0,
            "transports": ["websocket", "quic", "grpc"],
            "max_message_bytes": None,
            "deprecated": False,
            "deprecation_note": "",
        },
    }
    cardinalities = [route["cardinality"] for route in chat["routes"]]
    assert cardinalities[:4] == ["unary", "server_stream", "client_stream", "bidi_stream"]
    admin = services["examples.chat.v1.ChatAdminService"]
    assert admin["routes"][0]["wire_id"] == 0
    assert admin["routes"][0]["options"]["transports"] == ["grpc"]
    pushes = {push["type_id"]: push["message_type"] for push in data["push_types"]}
    assert pushes[1] == "examples.chat.v1.MessagePosted"


def test_descriptor_set_gives_the_same_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    descriptor_set = tmp_path / "schema.binpb"
    descriptor_set.write_bytes(compile_directory(SCHEMAS).files.SerializeToString())
    assert _routes_json(descriptor_set, capsys) == _routes_json(SCHEMAS, capsys)


def test_text_table_shows_wire_ids_and_resolved_options(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["routes", str(SCHEMAS)]) == 0
    lines = [" ".join(line.split()) for line in capsys.readouterr().out.splitlines()]
    assert (
        "examples.chat.v1.ChatService service_id 1 examples/chat/v1/chat.proto "
        "reserved route ids 10-12"
    ) in lines
    assert "route wire id cardinality path transports auth options" in lines
    assert (
        "1 0x0001_0001 unary /examples.chat.v1.ChatService/Send websocket,quic,grpc "
        "authenticated [chat.write] idempotent, timeout 5s"
    ) in lines
    assert (
        "3 0x0001_0003 client_stream /examples.chat.v1.ChatService/Upload "
        "websocket,quic,grpc authenticated [chat] max 1048576 bytes"
    ) in lines
    assert "- - unary /examples.chat.v1.ChatAdminService/Purge grpc none -" in lines
    assert "1 examples.chat.v1.MessagePosted examples/chat/v1/chat.proto" in lines


def test_bad_inputs_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    junk = tmp_path / "junk.binpb"
    junk.write_bytes(b"\xff\xfe not a descriptor set")
    assert main(["routes", str(junk)]) == 1
    assert "not a readable FileDescriptorSet" in capsys.readouterr().err
    (tmp_path / "bad.proto").write_text(
        'syntax = "proto3";\nimport "flare/options/v1/options.proto";\nmessage M {}\n'
        "service S { rpc A(M) returns (M) { option (flare.options.v1.method) = {route_id: 1}; } }\n"
    )
    assert main(["routes", str(tmp_path)]) == 1
    assert "bad.proto:4:36: S.A sets route_id 1 but service S has no service_id" in (
        capsys.readouterr().err
    )


def test_a_descriptor_set_with_unnamed_or_repeated_files_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Bytes that merely parse as a FileDescriptorSet are refused, never printed as an
    # empty (or partial) table with exit 0.
    chat = compile_directory(SCHEMAS).files
    unnamed = descriptor_pb2.FileDescriptorSet()
    unnamed.file.add()
    repeated = descriptor_pb2.FileDescriptorSet()
    repeated.CopyFrom(chat)
    repeated.file.add(name=chat.file[-1].name)
    for name, descriptor_set, message in (
        ("unnamed.binpb", unnamed, "a file in the descriptor set has no name"),
        ("repeated.binpb", repeated, f"the descriptor set holds {chat.file[-1].name} twice"),
    ):
        path = tmp_path / name
        path.write_bytes(descriptor_set.SerializeToString())
        assert main(["routes", str(path)]) == 1
        assert f"{path}: {message}" in capsys.readouterr().err
