"""`flare_codegen.model`: the option numbers and resolution rules shared by the
generator and `flare schema check` (which runs without the generated options module)."""

from __future__ import annotations

import pytest
from flare.options.v1 import options_pb2

from flare_codegen.model import (
    AUTH_BY_OPTION,
    TRANSPORT_BY_OPTION,
    resolve_auth,
    transports_when_unlisted,
)
from flare_runtime.routing import ALL_TRANSPORTS, AuthRequirement, Transport


def test_option_numbers_match_options_proto() -> None:
    assert TRANSPORT_BY_OPTION == {
        options_pb2.TRANSPORT_WEBSOCKET: Transport.WEBSOCKET,
        options_pb2.TRANSPORT_QUIC: Transport.QUIC,
        options_pb2.TRANSPORT_GRPC: Transport.GRPC,
    }
    assert AUTH_BY_OPTION == {
        options_pb2.AUTH_REQUIREMENT_NONE: AuthRequirement.NONE,
        options_pb2.AUTH_REQUIREMENT_AUTHENTICATED: AuthRequirement.AUTHENTICATED,
    }


NONE, AUTH = AuthRequirement.NONE, AuthRequirement.AUTHENTICATED


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
    method_auth: AuthRequirement | None,
    method_scopes: tuple[str, ...],
    default_auth: AuthRequirement | None,
    default_scopes: tuple[str, ...],
    expected: tuple[AuthRequirement, tuple[str, ...]],
) -> None:
    assert resolve_auth(method_auth, method_scopes, default_auth, default_scopes) == expected


def test_unlisted_transports_depend_on_the_service_id() -> None:
    assert transports_when_unlisted(True) == ALL_TRANSPORTS
    assert transports_when_unlisted(False) == frozenset({Transport.GRPC})
