"""Development certificates (``flare cert dev``, `flare_runtime.cli.cert`, writes them).

QUIC always runs TLS 1.3, so even a laptop demo needs a certificate. A *dev*
certificate is self-signed (it is its own CA), valid for ``localhost``,
``127.0.0.1`` and ``::1`` (plus any names given), with an ECDSA P-256 key.
Clients trust it by passing the certificate file as their CA file::

    flare cert dev -o certs/            # writes certs/dev-cert.pem, certs/dev-key.pem
    flare serve app:server --quic :8443 --tls-cert certs/dev-cert.pem --tls-key certs/dev-key.pem
    flare.connect("quic://localhost:8443", ca_file="certs/dev-cert.pem")

Never use one in production: anyone holding the key file can impersonate the
server, and nothing revokes it.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

DEFAULT_NAMES: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")
"""Subject alternative names a dev certificate always covers."""


@dataclass(frozen=True, slots=True)
class CertificateFiles:
    """Paths of a PEM certificate and its PEM (PKCS#8, unencrypted) private key."""

    certificate: Path
    private_key: Path


def write_dev_certificate(
    directory: str | os.PathLike[str],
    *,
    names: Sequence[str] = (),
    days: int = 30,
    prefix: str = "dev",
    overwrite: bool = False,
) -> CertificateFiles:
    """Write a self-signed certificate and key for local development.

    Files are ``<directory>/<prefix>-cert.pem`` and ``<prefix>-key.pem``; the key
    file is created with mode 0600. `names` are added to `DEFAULT_NAMES` as DNS
    names, or IP addresses where they parse as one. Raises `FileExistsError`
    when a file exists and `overwrite` is false, `ValueError` for ``days < 1``.
    """
    # Imported here so that importing this module stays cheap.
    from cryptography import x509  # noqa: PLC0415
    from cryptography.hazmat.primitives import hashes, serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID  # noqa: PLC0415

    if days < 1:
        raise ValueError(f"days must be at least 1, got {days}")
    folder = Path(directory)
    files = CertificateFiles(folder / f"{prefix}-cert.pem", folder / f"{prefix}-key.pem")
    if not overwrite:
        for path in (files.certificate, files.private_key):
            if path.exists():
                raise FileExistsError(f"{path} exists (pass overwrite / --force to replace it)")

    alternative_names: list[x509.GeneralName] = []
    seen: set[str] = set()
    for name in (*DEFAULT_NAMES, *names):
        if name in seen:
            continue
        seen.add(name)
        try:
            alternative_names.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alternative_names.append(x509.DNSName(name))

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, (*names, "localhost")[0]),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Flare development certificate"),
        ]
    )
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        # Back-dated a little so a client whose clock lags does not reject it.
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alternative_names), critical=False)
        # A self-signed leaf that clients load as their CA: it must say CA:TRUE
        # for OpenSSL-based verifiers, and carry serverAuth for strict ones.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )

    folder.mkdir(parents=True, exist_ok=True)
    files.certificate.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    descriptor = os.open(files.private_key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as key_file:
        key_file.write(key_bytes)
    return files
