"""The QUIC harness of the conformance suite (`flare_runtime.testing.conformance`).

QUIC can do everything the suite asks (it carries the same Flare wire protocol
as WebSocket), so nothing is skipped. QUIC always has TLS: the harness writes
one self-signed dev certificate per process (`flare cert dev`'s) and the
clients trust it through ``ca_file``. Clients use the default ticket store, so
a test that reconnects to the same server resumes and may use 0-RTT -- the
production path.
"""

from __future__ import annotations

import tempfile

from flare_runtime.server import Server, TLSFiles
from flare_runtime.testing.harness import Harness
from flare_runtime.transports.quic_certs import CertificateFiles, write_dev_certificate

_certificate_directory: tempfile.TemporaryDirectory[str] | None = None
_files: CertificateFiles | None = None


def dev_certificate() -> CertificateFiles:
    """This process's dev certificate for 127.0.0.1/localhost (made on first use)."""
    global _certificate_directory, _files  # noqa: PLW0603 -- one per process, by design
    if _files is None:
        _certificate_directory = tempfile.TemporaryDirectory(prefix="flare-quic-harness-")
        _files = write_dev_certificate(_certificate_directory.name)
    return _files


async def _start_quic(server: Server) -> str:
    files = dev_certificate()
    await server.start(
        quic="127.0.0.1:0", tls=TLSFiles(str(files.certificate), str(files.private_key))
    )
    return f"quic://127.0.0.1:{server.port('quic')}"


def harness() -> Harness:
    """The QUIC harness (named by the quic `TransportSpec`)."""
    return Harness(
        "quic", _start_quic, connect_options={"ca_file": str(dev_certificate().certificate)}
    )
