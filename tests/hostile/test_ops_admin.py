"""Hostile calls to the admin API (``flare.admin.v1.Admin``), one test per row.

The promise: every method refuses a caller without the ``flare.admin`` scope
before it does anything -- UNAUTHENTICATED without credentials,
PERMISSION_DENIED with a token lacking the scope -- and nothing is kicked or
drained.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from flare.admin.v1 import admin_pb2
from flare.admin.v1.admin_flare import AdminClient

from flare_runtime import connect
from flare_runtime.admin.service import AdminService
from flare_runtime.auth import JWTAuth, issue_jwt
from flare_runtime.errors import RpcError
from flare_runtime.server import Server
from flare_runtime.status import StatusCode
from flare_runtime.wire.client import WireChannel

KEY = "hostile-admin-key-0123456789abcdefghij"


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    server = Server([], auth=JWTAuth(KEY))
    server.add(AdminService(server))
    await server.start(websocket="127.0.0.1:0")
    try:
        yield server
    finally:
        await server.shutdown(grace=0.1)


async def _refused(server: Server, token: str | None, code: StatusCode) -> None:
    url = f"ws://127.0.0.1:{server.port('websocket')}"
    async with connect(url, token=token) as channel:
        assert isinstance(channel, WireChannel)
        client = AdminClient(channel)
        (own,) = server.connections.values()
        for call in (
            client.get_stats(admin_pb2.GetStatsRequest()),
            client.list_connections(admin_pb2.ListConnectionsRequest()),
            client.kick_connection(
                admin_pb2.KickConnectionRequest(connection_id=own.connection_id)
            ),
            client.list_sessions(admin_pb2.ListSessionsRequest()),
            client.kick_session(admin_pb2.KickSessionRequest(session_id="s")),
            client.drain(admin_pb2.DrainRequest()),
        ):
            with pytest.raises(RpcError) as raised:
                await call
            assert raised.value.code == code
        assert not channel.closed
    assert server.ready and not server.draining


async def test_admin_calls_without_credentials(server: Server) -> None:
    """Every admin method with no token → UNAUTHENTICATED; nothing kicked or drained."""
    await _refused(server, None, StatusCode.UNAUTHENTICATED)


async def test_admin_calls_with_a_token_lacking_the_scope(server: Server) -> None:
    """Every admin method with a valid token holding other scopes → PERMISSION_DENIED."""
    token = issue_jwt(KEY, "mallory", scopes=["chat.write", "flare.admin.read"])
    await _refused(server, token, StatusCode.PERMISSION_DENIED)


async def test_admin_calls_with_a_forged_token(server: Server) -> None:
    """A token claiming the scope, signed with another key → UNAUTHENTICATED."""
    token = issue_jwt("another-key-0123456789abcdefghijklmn", "mallory", scopes=["flare.admin"])
    await _refused(server, token, StatusCode.UNAUTHENTICATED)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["ws://127.0.0.1:1", "kick"], "kick needs an ID"),
        (["ws://127.0.0.1:1", "stats", "7"], "stats takes no ID"),
        (["nope://x", "stats"], "flare admin: "),
    ],
)
def test_admin_command_misuse(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``flare admin URL kick`` (no ID), an ID where none goes, a bad URL → exit 2, one line."""
    from flare_runtime.cli import main

    assert main(["admin", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("flare admin: ") and message in err and err.count("\n") == 1


def test_admin_against_a_port_that_is_closed(capsys: pytest.CaptureFixture[str]) -> None:
    """``flare admin ws://127.0.0.1:1 stats`` (nothing listens) → exit 1, one line."""
    from flare_runtime.cli import main

    assert main(["admin", "ws://127.0.0.1:1", "stats", "--connect-timeout", "2"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("flare admin: cannot connect") and err.count("\n") == 1
