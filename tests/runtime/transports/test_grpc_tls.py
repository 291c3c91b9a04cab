"""gRPC over TLS (``grpcs://``): Flare's server with a given certificate, Flare's and stock clients.

The certificate is a Flare dev certificate (``flare cert dev``), which is its
own CA; the mutual-TLS test issues a CA, a server and a client certificate.
The calls go to the standard health service, so no schema is needed.
"""

from __future__ import annotations

import asyncio
import datetime
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

from flare_runtime.client import connect
from flare_runtime.dispatch import Dispatcher
from flare_runtime.errors import ConnectionClosedError, RpcError
from flare_runtime.routing import Cardinality, Route, Router
from flare_runtime.status import StatusCode
from flare_runtime.testing.timing import UNIT
from flare_runtime.transports.grpc_client import connect_grpc
from flare_runtime.transports.grpc_server import GrpcServer, GrpcTls
from flare_runtime.transports.quic_certs import CertificateFiles, write_dev_certificate

HEALTH_CHECK: Route[Any, Any] = Route(
    path="/grpc.health.v1.Health/Check",
    service_id=0,
    route_id=0,
    cardinality=Cardinality.UNARY,
    request_type=health_pb2.HealthCheckRequest,
    response_type=health_pb2.HealthCheckResponse,
    handler_name="check",
)


@pytest.fixture
def certificate(tmp_path: Path) -> CertificateFiles:
    return write_dev_certificate(tmp_path)


@pytest.fixture
async def tls_port(certificate: CertificateFiles) -> AsyncIterator[int]:
    server = GrpcServer(Dispatcher(Router()))
    tls = GrpcTls.from_files(str(certificate.certificate), str(certificate.private_key))
    port = await server.start("127.0.0.1:0", tls=tls)
    try:
        yield port
    finally:
        await server.stop(None)


async def test_flare_client_over_grpcs(tls_port: int, certificate: CertificateFiles) -> None:
    async with connect_grpc(
        f"grpcs://localhost:{tls_port}", ca_cert=certificate.certificate
    ) as channel:
        reply = await channel.unary_unary(
            HEALTH_CHECK, health_pb2.HealthCheckRequest(), timeout=2 * UNIT
        )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_ip_address_with_server_name_override(
    tls_port: int, certificate: CertificateFiles
) -> None:
    async with connect_grpc(
        f"grpcs://127.0.0.1:{tls_port}",
        ca_cert=certificate.certificate.read_bytes(),
        server_name="localhost",
    ) as channel:
        reply = await channel.unary_unary(HEALTH_CHECK, health_pb2.HealthCheckRequest())
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_stock_client_over_tls(tls_port: int, certificate: CertificateFiles) -> None:
    credentials = grpc.ssl_channel_credentials(certificate.certificate.read_bytes())
    async with grpc.aio.secure_channel(f"localhost:{tls_port}", credentials) as channel:
        stub: Any = health_pb2_grpc.HealthStub(channel)
        reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=2 * UNIT)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_tls_1_3_is_negotiated(tls_port: int, certificate: CertificateFiles) -> None:
    context = ssl.create_default_context(cafile=str(certificate.certificate))
    context.set_alpn_protocols(["h2"])

    def handshake() -> tuple[str | None, str | None]:
        with (
            socket.create_connection(("127.0.0.1", tls_port), timeout=2 * UNIT) as raw,
            context.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            return tls.version(), tls.selected_alpn_protocol()

    assert await asyncio.to_thread(handshake) == ("TLSv1.3", "h2")


async def test_untrusted_certificate_is_unavailable(tls_port: int) -> None:
    # The system roots do not trust a dev certificate.
    async with connect_grpc(f"grpcs://localhost:{tls_port}") as channel:
        with pytest.raises(RpcError) as raised:
            await channel.unary_unary(
                HEALTH_CHECK, health_pb2.HealthCheckRequest(), timeout=2 * UNIT
            )
    assert raised.value.code is StatusCode.UNAVAILABLE


async def test_plaintext_client_cannot_talk_to_tls_server(tls_port: int) -> None:
    async with connect_grpc(f"grpc://127.0.0.1:{tls_port}") as channel:
        with pytest.raises(RpcError) as raised:
            await channel.unary_unary(
                HEALTH_CHECK, health_pb2.HealthCheckRequest(), timeout=2 * UNIT
            )
    assert raised.value.code in (StatusCode.UNAVAILABLE, StatusCode.DEADLINE_EXCEEDED)


def issue(
    subject: str,
    *,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None = None,
    usage: x509.ObjectIdentifier | None = None,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A certificate for `subject`: a self-signed CA without `issuer`, else a leaf it signs."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer[0].subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(subject)]), critical=False
        )
    signer = issuer[1] if issuer else key
    return builder.sign(signer, hashes.SHA256()), key


def pem(item: x509.Certificate | ec.EllipticCurvePrivateKey) -> bytes:
    if isinstance(item, x509.Certificate):
        return item.public_bytes(serialization.Encoding.PEM)
    return item.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


async def test_mutual_tls_requires_a_client_certificate() -> None:
    ca = issue("Flare test CA")
    server_cert, server_key = issue("localhost", issuer=ca, usage=ExtendedKeyUsageOID.SERVER_AUTH)
    client_cert, client_key = issue("client", issuer=ca, usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    server = GrpcServer(Dispatcher(Router()))
    tls = GrpcTls(pem(server_cert), pem(server_key), client_ca=pem(ca[0]))
    port = await server.start("127.0.0.1:0", tls=tls)
    url = f"grpcs://localhost:{port}"
    try:
        async with connect_grpc(
            url, ca_cert=pem(ca[0]), cert=pem(client_cert), key=pem(client_key)
        ) as channel:
            reply = await channel.unary_unary(
                HEALTH_CHECK, health_pb2.HealthCheckRequest(), timeout=2 * UNIT
            )
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        async with connect_grpc(url, ca_cert=pem(ca[0])) as anonymous:
            with pytest.raises(RpcError) as raised:
                await anonymous.unary_unary(
                    HEALTH_CHECK, health_pb2.HealthCheckRequest(), timeout=2 * UNIT
                )
            assert raised.value.code is StatusCode.UNAVAILABLE
    finally:
        await server.stop(None)


async def test_connect_with_an_ssl_context(tls_port: int, certificate: CertificateFiles) -> None:
    """``flare_runtime.connect(..., ssl_context=...)``: its CA certificates become the roots."""
    context = ssl.create_default_context(cafile=str(certificate.certificate))
    async with connect(f"grpcs://localhost:{tls_port}", ssl_context=context) as channel:
        reply = await channel.unary_unary(HEALTH_CHECK, health_pb2.HealthCheckRequest())
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(ConnectionClosedError):
        await connect(f"grpcs://localhost:{tls_port}", open_timeout=0.5 * UNIT)
