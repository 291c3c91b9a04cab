"""`flare_codegen.model`: the option numbers and resolution rules shared by the
generator and `flare schema check` (which runs without the generated options module)."""

from __future__ import annotations

import pytest
from flare.options.v1 import options_pb2

from flare_codegen import model
from flare_codegen.model import (
    ALL_TRANSPORTS,
    AUTH_BY_OPTION,
    TRANSPORT_BY_OPTION,
    Auth,
    Transport,
    resolve_auth,
    transports_when_unlisted,
)
from flare_runtime import routing


def test_option_numbers_match_options_proto() -> None:
    assert TRANSPORT_BY_OPTION == {
        options_pb2.TRANSPORT_WEBSOCKET: Transport.WEBSOCKET,
        options_pb2.TRANSPORT_QUIC: Transport.QUIC,
        options_pb2.TRANSPORT_GRPC: Transport.GRPC,
    }
    assert AUTH_BY_OPTION == {
        options_pb2.AUTH_REQUIREMENT_NONE: Auth.NONE,
        options_pb2.AUTH_REQUIREMENT_AUTHENTICATED: Auth.AUTHENTICATED,
    }


def test_mirrored_enums_name_the_runtime_members() -> None:
    """The generator mirrors the runtime's enums (importing the runtime would cost every
    protoc run its start-up); generated code names the runtime member by each value."""
    assert {member.value for member in model.Cardinality} == {m.name for m in routing.Cardinality}
    assert {member.value for member in model.Transport} == {m.name for m in routing.Transport}
    assert {member.value for member in model.Auth} == {m.name for m in routing.AuthRequirement}
    for member in model.Cardinality:
        runtime = routing.Cardinality[member.value]
        assert (member.client_streams, member.server_streams) == (
            runtime.client_streams,
            runtime.server_streams,
        )
    assert {routing.Transport[t.value] for t in model.ALL_TRANSPORTS} == routing.ALL_TRANSPORTS


NONE, AUTH = Auth.NONE, Auth.AUTHENTICATED


@pytest.mark.parametrize(
    ("method_auth", "method_scopes", "default_auth", "default_scopes", "expected"),
    [
        (NONE, (), AUTH, ("a",), (NONE, ())),  # the method's NONE wins
        (None, ("m",), NONE, ("a",), (AUTH, ("m",))),  # its own scopes
        (AUTH, (), None, ("a",), (AUTH, ("a",))),  # its AUTHENTICATED, service scopes
        (None, (), NONE, ("a",), (NONE, ())),  # the service's explicit NONE
        (None, (), AUTH, (), (AUTH, ())),
        (None, (), None, ("a",), (AUTH, ("a",))),  # default scopes imply authenticated
        (None, (), None, (), (NONE, ())),
    ],
)
def test_resolve_auth_follows_the_documented_order(
    method_auth: Auth | None,
    method_scopes: tuple[str, ...],
    default_auth: Auth | None,
    default_scopes: tuple[str, ...],
    expected: tuple[Auth, tuple[str, ...]],
) -> None:
    assert resolve_auth(method_auth, method_scopes, default_auth, default_scopes) == expected


def test_unlisted_transports_depend_on_the_service_id() -> None:
    assert transports_when_unlisted(True) == ALL_TRANSPORTS
    assert transports_when_unlisted(False) == frozenset({Transport.GRPC})
