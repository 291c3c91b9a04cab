"""The WebTransport transport's own contract (the conformance suite covers calls).

Real UDP sockets on 127.0.0.1; the server and Python client are
flare_runtime.transports.webtransport's; the browser side is in
test_webtransport_browser.py.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from flare_runtime.client import connect
from flare_runtime.errors import ConfigurationError, ConnectionClosedError, RpcError
from flare_runtime.server import Server
from flare_runtime.status import StatusCode
from flare_runtime.testing.harness import start_rig
from flare_runtime.testing.service import SERVICE, ConformanceService, Routes, StringValue
from flare_runtime.testing.webtransport_harness import dev_certificate
from flare_runtime.transports.webtransport import certificate_hash


def test_certificate_hash_is_the_sha256_of_the_der_certificate() -> None:
    import hashlib

    pem = Path(dev_certificate().certificate).read_text()
    expected = hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).digest()
    assert certificate_hash(dev_certificate().certificate) == expected
    assert len(expected) == 32


async def test_the_listener_needs_a_certificate() -> None:
    server = Server([(SERVICE, ConformanceService())])
    with pytest.raises(ConfigurationError, match="WebTransport runs on HTTP/3, always with TLS"):
        await server.start(listen={"webtransport": "127.0.0.1:0"})


async def test_the_client_refuses_unknown_options_and_bad_urls() -> None:
    with pytest.raises(ConfigurationError, match="unknown WebTransport connect options: ca_fle"):
        await connect("webtransport://127.0.0.1:1", ca_fle="x")
    with pytest.raises(ConfigurationError, match="expected webtransport://host:port"):
        await connect("webtransport:///nohost")


async def test_only_the_flare_path_opens_a_session_and_an_untrusted_certificate_fails() -> None:
    rig = await start_rig("webtransport")
    try:
        port = rig.server.port("webtransport")
        with pytest.raises(ConnectionClosedError, match="the server answered 404"):
            await connect(
                f"webtransport://127.0.0.1:{port}/elsewhere", **rig.harness.connect_options
            )
        with pytest.raises(ConnectionClosedError, match="cannot connect"):
            await connect(f"webtransport://127.0.0.1:{port}", open_timeout=5.0)  # no ca_file
    finally:
        await rig.server.shutdown(1.0)


async def test_a_bad_token_fails_calls_that_need_auth_and_a_good_one_names_the_caller() -> None:
    rig = await start_rig("webtransport")
    try:
        async with rig.connect(token="not-a-jwt") as channel:
            with pytest.raises(RpcError) as caught:
                await channel.unary_unary(Routes.WHO_AM_I, StringValue())
            assert caught.value.code is StatusCode.UNAUTHENTICATED
        async with rig.connect(token=rig.token("bob")) as channel:
            reply = await channel.unary_unary(Routes.WHO_AM_I, StringValue())
            assert reply.value == "bob"
    finally:
        await rig.server.shutdown(1.0)
