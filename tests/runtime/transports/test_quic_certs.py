"""`flare cert dev`: a self-signed certificate aioquic and OpenSSL accept for localhost."""

from __future__ import annotations

import contextlib
import ipaddress
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509

from flare_runtime.cli import main as flare_main
from flare_runtime.transports.quic_certs import write_dev_certificate


def test_dev_certificate_covers_localhost_and_extra_names(tmp_path: Path) -> None:
    files = write_dev_certificate(tmp_path, names=["chat.test", "10.0.0.7"], days=3)
    certificate = x509.load_pem_x509_certificate(files.certificate.read_bytes())
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(names.get_values_for_type(x509.DNSName)) == {"localhost", "chat.test"}
    assert set(names.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
        ipaddress.ip_address("10.0.0.7"),
    }
    lifetime = certificate.not_valid_after_utc - certificate.not_valid_before_utc
    assert 3 * 86400 <= lifetime.total_seconds() <= 3 * 86400 + 600
    assert stat.S_IMODE(files.private_key.stat().st_mode) == 0o600


def test_openssl_verifies_a_server_with_the_dev_certificate(tmp_path: Path) -> None:
    files = write_dev_certificate(tmp_path)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(files.certificate, files.private_key)
    client = ssl.create_default_context(cafile=str(files.certificate))
    client_in, client_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    server_in, server_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    client_side = client.wrap_bio(client_in, client_out, server_hostname="localhost")
    server_side = server.wrap_bio(server_in, server_out, server_side=True)
    for _ in range(10):  # pump the in-memory handshake until both sides are done
        for side in (client_side, server_side):
            with contextlib.suppress(ssl.SSLWantReadError):
                side.do_handshake()
        server_in.write(client_out.read())
        client_in.write(server_out.read())
    assert client_side.version() == "TLSv1.3"
    assert client_side.getpeercert() is not None


def test_refuses_to_overwrite_without_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert flare_main(["cert", "dev", "-o", str(tmp_path)]) == 0
    first = (tmp_path / "dev-cert.pem").read_bytes()
    assert flare_main(["cert", "dev", "-o", str(tmp_path)]) == 2
    assert "exists" in capsys.readouterr().err
    assert (tmp_path / "dev-cert.pem").read_bytes() == first
    assert flare_main(["cert", "dev", "-o", str(tmp_path), "--force", "--prefix", "dev"]) == 0
    assert (tmp_path / "dev-cert.pem").read_bytes() != first


def test_rejects_a_non_positive_lifetime(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="days"):
        write_dev_certificate(tmp_path, days=0)
