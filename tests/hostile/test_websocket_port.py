"""Hostile peers on the WebSocket port: raw HTTP upgrades and raw WebSocket frames.

Each test is one row of the hostile-input catalogue: its docstring states the
input and the promised outcome (docs/security/wire.md links here). A real
server on 127.0.0.1, real sockets; the hostile side is hand-written bytes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest
from google.protobuf.wrappers_pb2 import BytesValue

from flare_runtime import ConnectionClosedError, connect
from flare_runtime.testing.harness import Rig, start_rig
from flare_runtime.testing.service import Routes

TIMEOUT = 10.0


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    started = await start_rig("websocket")
    yield started
    await started.server.shutdown(grace=0)


def _port(rig: Rig) -> int:
    return rig.server.port("websocket")


async def raw_upgrade(
    port: int, headers: list[tuple[str, str]], path: str = "/"
) -> tuple[int, bytes]:
    """Send one WebSocket upgrade request with exactly `headers`; return (status, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: 127.0.0.1:{port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version: 13",
            *(f"{name}: {value}" for name, value in headers),
        ]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        body = await asyncio.wait_for(reader.readexactly(length), TIMEOUT) if length else b""
        return status, body
    finally:
        writer.close()


async def test_two_authorization_headers_are_refused_before_the_upgrade(rig: Rig) -> None:
    """Input: an upgrade request with two ``Authorization`` headers (a bad token, then a
    valid one). Outcome: ``401`` before ``101 Switching Protocols``, naming the ambiguity;
    neither credential is picked and no connection is opened."""
    status, body = await raw_upgrade(
        _port(rig),
        [("Authorization", "Bearer not-a-token"), ("Authorization", f"Bearer {rig.token()}")],
    )
    assert status == 401
    assert b"ambiguous credentials" in body
    assert not rig.server.connections


@pytest.mark.parametrize(
    ("headers", "path"),
    [
        ([("Authorization", "Bearer a")], "/?access_token=b"),
        ([], "/?access_token=a&access_token=b"),
    ],
    ids=["header-and-query", "two-query-tokens"],
)
async def test_credentials_in_header_and_url_together_are_refused(
    rig: Rig, headers: list[tuple[str, str]], path: str
) -> None:
    """Input: an upgrade carrying an ``Authorization`` header and an ``access_token`` URL
    parameter, or two ``access_token`` parameters. Outcome: ``401`` before ``101``."""
    status, body = await raw_upgrade(_port(rig), headers, path)
    assert status == 401
    assert b"ambiguous credentials" in body


async def test_a_bin_header_that_is_not_base64_is_refused_before_the_upgrade(rig: Rig) -> None:
    """Input: an upgrade with ``x-flare-trace-bin: %%%`` (not base64). Outcome: ``400`` before
    ``101``, naming the header; no exception escapes into the server (it used to raise after
    sending 101, leaving the client with no answer)."""
    status, body = await raw_upgrade(_port(rig), [("x-flare-trace-bin", "%%%")])
    assert status == 400
    assert b"x-flare-trace-bin is not base64" in body


async def test_a_base64_bin_header_becomes_binary_metadata(rig: Rig) -> None:
    """Input: a client connecting with binary connection metadata (``trace-bin``). Outcome:
    it travels as base64 in ``x-flare-trace-bin`` and the server's connection metadata holds
    the original bytes."""
    async with rig.connect(metadata={"trace-bin": b"\x00\xff\x10"}) as channel:
        await channel.unary_unary(Routes.ECHO, BytesValue(), timeout=TIMEOUT)
        (connection,) = rig.server.connections
        assert connection.metadata.get("x-flare-trace-bin") == b"\x00\xff\x10"


async def test_a_flare_client_sees_why_its_upgrade_was_refused(rig: Rig) -> None:
    """Input: a Flare client given a token and an ``authorization`` metadata entry as well
    (two credentials). Outcome: `connect` raises `ConnectionClosedError` saying ``HTTP 401``
    and the server's reason, at once (not after its open timeout)."""
    with pytest.raises(ConnectionClosedError) as caught:
        await asyncio.wait_for(
            connect(rig.url, token=rig.token(), metadata={"authorization": "Bearer other"}),
            TIMEOUT,
        )
    assert "HTTP 401" in str(caught.value)
    assert "ambiguous credentials" in str(caught.value)


async def test_a_flood_of_bad_upgrades_writes_a_bounded_log(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    """Input: 2,000 upgrade requests with duplicate ``Authorization`` headers, from 20
    connections at a time, with every logger at INFO. Outcome: each is refused with 401 and
    the server writes at most a few dozen log lines in all (``ServerOptions.log_burst`` per
    kind per ``log_interval``), not one or more per request (it wrote a traceback each)."""
    caplog.set_level(logging.INFO)
    port = _port(rig)
    headers = [("Authorization", "Bearer a"), ("Authorization", "Bearer b")]
    statuses: list[int] = []

    async def worker(count: int) -> None:
        for _ in range(count):
            status, _body = await raw_upgrade(port, headers)
            statuses.append(status)

    await asyncio.gather(*(worker(100) for _ in range(20)))
    assert statuses == [401] * 2_000
    burst = rig.server.options.log_burst
    kinds = {(record.name, record.msg) for record in caplog.records}
    assert len(caplog.records) <= burst * max(len(kinds), 1)
    assert len(caplog.records) <= 5 * burst
    assert sum(len(record.getMessage()) for record in caplog.records) < 20_000
