"""The WebTransport harness of the conformance suite (`flare_runtime.testing.conformance`).

WebTransport carries the same Flare wire protocol as WebSocket on one stream,
so nothing is skipped. HTTP/3 always has TLS: the harness serves a dev
certificate of its own, valid for 10 days, which a browser also accepts by
its hash (``serverCertificateHashes`` takes ECDSA certificates valid for at
most 14 days); Python clients trust it through ``ca_file``.
"""

from __future__ import annotations

import tempfile

from flare_runtime.server import Server, TLSFiles
from flare_runtime.testing.harness import Harness
from flare_runtime.transports.quic_certs import CertificateFiles, write_dev_certificate

_certificate_directory: tempfile.TemporaryDirectory[str] | None = None
_files: CertificateFiles | None = None


def dev_certificate() -> CertificateFiles:
    """This process's 10-day dev certificate for 127.0.0.1/localhost (made on first use)."""
    global _certificate_directory, _files  # noqa: PLW0603 -- one per process, by design
    if _files is None:
        _certificate_directory = tempfile.TemporaryDirectory(prefix="flare-wt-harness-")
        _files = write_dev_certificate(_certificate_directory.name, days=10)
    return _files


async def _start_webtransport(server: Server) -> str:
    files = dev_certificate()
    await server.start(
        listen={"webtransport": "127.0.0.1:0"},
        tls=TLSFiles(str(files.certificate), str(files.private_key)),
    )
    return f"webtransport://127.0.0.1:{server.port('webtransport')}"


def harness() -> Harness:
    """The WebTransport harness (named by the webtransport `TransportSpec`)."""
    return Harness(
        "webtransport",
        _start_webtransport,
        connect_options={"ca_file": str(dev_certificate().certificate)},
    )
