"""Each Flare rule (category FLARE) fires on the change it guards, and only then."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.schema.conftest import Run

Mutation = Callable[[str], str]


def replace(old: str, new: str) -> Mutation:
    def mutate(text: str) -> str:
        assert old in text, old
        return text.replace(old, new, 1)

    return mutate


DELETE_PING = replace(
    """  rpc Ping(SendRequest) returns (SendReply) {
    option (flare.options.v1.method) = {route_id: 3};
  }
""",
    "",
)

CASES: dict[str, tuple[Mutation, str]] = {
    "service id changed": (replace("service_id: 1", "service_id: 2"), "FLARE_SERVICE_ID_SAME"),
    "service id reused by another service": (
        replace("service Chat {", "service Talk {"),
        "FLARE_SERVICE_ID_NO_REUSE",
    ),
    "route id changed": (
        replace("route_id: 1, idempotent", "route_id: 5, idempotent"),
        "FLARE_ROUTE_ID_SAME",
    ),
    "route deleted without reserving": (DELETE_PING, "FLARE_ROUTE_NO_DELETE"),
    "route id reused by another method": (
        lambda text: DELETE_PING(text).replace(
            "  rpc Watch(",
            "  rpc Pong(SendRequest) returns (SendReply) {\n"
            "    option (flare.options.v1.method) = {route_id: 3};\n  }\n  rpc Watch(",
        ),
        "FLARE_ROUTE_ID_NO_REUSE",
    ),
    "reserved route id used": (replace("route_id: 3}", "route_id: 9}"), "FLARE_ROUTE_ID_NO_REUSE"),
    "reserved route id dropped": (
        replace("reserved_route_ids: [{start: 9}]", ""),
        "FLARE_RESERVED_ROUTE_ID_NO_DELETE",
    ),
    "cardinality changed": (
        replace(
            "rpc Send(SendRequest) returns (SendReply)",
            "rpc Send(stream SendRequest) returns (SendReply)",
        ),
        "FLARE_ROUTE_SAME_CARDINALITY",
    ),
    "idempotent removed": (replace(", idempotent: true", ""), "FLARE_ROUTE_IDEMPOTENT_NO_REMOVE"),
    "auth loosened": (replace("auth: AUTH_REQUIREMENT_AUTHENTICATED", ""), "FLARE_ROUTE_SAME_AUTH"),
    "auth tightened": (
        replace("route_id: 3}", 'route_id: 3, scopes: ["admin"]}'),
        "FLARE_ROUTE_SAME_AUTH",
    ),
    "transport removed": (
        replace(
            "transports: [TRANSPORT_WEBSOCKET, TRANSPORT_QUIC]", "transports: [TRANSPORT_QUIC]"
        ),
        "FLARE_ROUTE_TRANSPORT_NO_REMOVE",
    ),
    "push type id changed": (
        replace("push_type_id: 1", "push_type_id: 2"),
        "FLARE_PUSH_TYPE_ID_SAME",
    ),
    "push type id reused": (
        lambda text: (
            text.replace("push_type_id: 1", "push_type_id: 7")
            + "\nmessage Left {\n  option (flare.options.v1.message) = {push_type_id: 1};\n"
            "  string user = 1;\n}\n"
        ),
        "FLARE_PUSH_TYPE_ID_NO_REUSE",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_flare_rule_reports_breaking_change(
    case: str,
    chat_proto: str,
    schema_pair: Callable[..., tuple[Path, Path]],
    flare: Callable[..., Run],
) -> None:
    mutate, rule = CASES[case]
    current, previous = schema_pair({"chat.proto": mutate(chat_proto)}, {"chat.proto": chat_proto})
    run = flare("schema", "check", str(current), "--against", str(previous), "--format", "json")
    assert run.code == 100, run.err
    findings = [f for f in run.findings() if f["type"] == rule]
    assert findings, run.out
    assert all(f["path"] == "chat.proto" and f["start_line"] != 1 for f in findings)


def test_auth_messages_say_loosened_or_tightened(
    chat_proto: str, schema_pair: Callable[..., tuple[Path, Path]], flare: Callable[..., Run]
) -> None:
    current, previous = schema_pair(
        {"chat.proto": chat_proto.replace("auth: AUTH_REQUIREMENT_AUTHENTICATED", "")},
        {"chat.proto": chat_proto},
    )
    run = flare("schema", "check", str(current), "--against", str(previous))
    assert "loosened its auth requirement from authenticated to no authentication" in run.out
    run = flare("schema", "check", str(previous), "--against", str(current))
    assert "tightened its auth requirement" in run.out


def test_compatible_flare_changes_pass(
    chat_proto: str, schema_pair: Callable[..., tuple[Path, Path]], flare: Callable[..., Run]
) -> None:
    grown = (
        DELETE_PING(chat_proto)
        .replace("reserved_route_ids: [{start: 9}]", "reserved_route_ids: [{start: 9}, {start: 3}]")
        .replace(
            "transports: [TRANSPORT_WEBSOCKET, TRANSPORT_QUIC]",
            "transports: [TRANSPORT_WEBSOCKET, TRANSPORT_QUIC, TRANSPORT_GRPC]",
        )
        .replace("route_id: 1}", "route_id: 1, idempotent: true}")
        .replace(
            "  rpc Watch(",
            "  rpc Ping(SendRequest) returns (SendReply) {\n"
            "    option (flare.options.v1.method) = {route_id: 4};\n  }\n  rpc Watch(",
        )
    )
    current, previous = schema_pair({"chat.proto": grown}, {"chat.proto": chat_proto})
    run = flare("schema", "check", str(current), "--against", str(previous), "--format", "json")
    # Moving Ping to a new route id is FLARE_ROUTE_ID_SAME; everything else here is additive.
    assert run.rules() == {"FLARE_ROUTE_ID_SAME"}, run.out


def test_identical_schemas_are_clean(
    chat_proto: str, schema_pair: Callable[..., tuple[Path, Path]], flare: Callable[..., Run]
) -> None:
    current, previous = schema_pair({"chat.proto": chat_proto}, {"chat.proto": chat_proto})
    run = flare("schema", "check", str(current), "--against", str(previous))
    assert (run.code, run.out) == (0, "")


def test_flare_rules_can_be_switched_off(
    chat_proto: str,
    schema_pair: Callable[..., tuple[Path, Path]],
    flare: Callable[..., Run],
) -> None:
    current, previous = schema_pair(
        {
            "chat.proto": chat_proto.replace("service_id: 1", "service_id: 2"),
            "buf.yaml": "version: v2\nbreaking:\n  except: [FLARE]\n",
        },
        {"chat.proto": chat_proto},
    )
    run = flare("schema", "check", str(current), "--against", str(previous))
    assert (run.code, run.out) == (0, "")


GRPC_ONLY = """\
syntax = "proto3";

package chat.v1;

import "flare/options/v1/options.proto";

message Req {}

service Legacy {
  rpc Get(Req) returns (Req) {
    option (flare.options.v1.method) = {transports: [TRANSPORT_GRPC]};
  }
  rpc Put(Req) returns (Req) {
    option (flare.options.v1.method) = {transports: [TRANSPORT_GRPC]};
  }
}
"""


def test_giving_a_grpc_only_service_its_first_ids_is_not_breaking(
    schema_pair: Callable[..., tuple[Path, Path]], flare: Callable[..., Run]
) -> None:
    # Id 0 means "no id": no deployed WebSocket/QUIC client can hold an old
    # one, so adopting Flare ids is additive (only losing or changing one breaks).
    service_id = "service Legacy {\n  option (flare.options.v1.service) = {service_id: 4};"
    with_ids = GRPC_ONLY.replace("service Legacy {", service_id).replace(
        "{transports: [TRANSPORT_GRPC]}", "{route_id: 1}", 1
    )
    current, previous = schema_pair({"chat.proto": with_ids}, {"chat.proto": GRPC_ONLY})
    run = flare("schema", "check", str(current), "--against", str(previous), "--format", "json")
    assert (run.code, run.out) == (0, ""), run.out
    # The other way round every id is lost: still breaking.
    run = flare("schema", "check", str(previous), "--against", str(current), "--format", "json")
    assert run.code == 100
    assert {"FLARE_SERVICE_ID_SAME", "FLARE_ROUTE_ID_SAME"} <= run.rules(), run.out


SCOPED = """\
syntax = "proto3";

package chat.v1;

import "flare/options/v1/options.proto";

message Req {}

service Admin {
  option (flare.options.v1.service) = {service_id: 5, default_scopes: ["admin"]};
  rpc Purge(Req) returns (Req) {
    option (flare.options.v1.method) = {route_id: 1};
  }
}
"""


@pytest.mark.parametrize(
    "opened",
    [
        # The method opts out: generated code lets anyone call it.
        ("{route_id: 1}", "{route_id: 1, auth: AUTH_REQUIREMENT_NONE}"),
        # The service default says none; its default_scopes then apply to no method.
        ("default_scopes:", "default_auth: AUTH_REQUIREMENT_NONE, default_scopes:"),
    ],
    ids=["method auth none", "service default_auth none"],
)
def test_auth_is_compared_as_generated_code_resolves_it(
    opened: tuple[str, str],
    schema_pair: Callable[..., tuple[Path, Path]],
    flare: Callable[..., Run],
) -> None:
    # Resolution as docs/options/auth.md and the generator apply it: auth NONE
    # wins over inherited default_scopes. Counting those scopes hid the change.
    current, previous = schema_pair({"chat.proto": SCOPED.replace(*opened)}, {"chat.proto": SCOPED})
    run = flare("schema", "check", str(current), "--against", str(previous))
    assert run.code == 100, run.out
    assert (
        'Method "Purge" on service "Admin" loosened its auth requirement from '
        'authenticated with scopes "admin" to no authentication.'
    ) in run.out


def test_an_id_less_service_is_compared_as_served_on_grpc_only(
    schema_pair: Callable[..., tuple[Path, Path]], flare: Callable[..., Run]
) -> None:
    # Without a service_id generated code serves every method on gRPC only, so
    # spelling that out (`transports: [TRANSPORT_GRPC]`) removes no transport.
    implicit = GRPC_ONLY.replace(
        "service Legacy {",
        "service Legacy {\n  option (flare.options.v1.service) = {default_auth: "
        "AUTH_REQUIREMENT_AUTHENTICATED};",
    ).replace("{transports: [TRANSPORT_GRPC]}", "{idempotent: true}")
    explicit = implicit.replace(
        "{idempotent: true}", "{idempotent: true, transports: [TRANSPORT_GRPC]}"
    )
    current, previous = schema_pair({"chat.proto": explicit}, {"chat.proto": implicit})
    run = flare("schema", "check", str(current), "--against", str(previous), "--format", "json")
    assert (run.code, run.out) == (0, ""), run.out
