"""``flare cert dev``: write a self-signed certificate and key for local development.

The certificate itself is `flare_runtime.transports.quic_certs.write_dev_certificate`'s.
"""

from __future__ import annotations

import argparse
import sys


def configure(parser: argparse.ArgumentParser) -> None:
    """Set up ``flare cert`` and its ``dev`` action."""
    actions = parser.add_subparsers(dest="cert_command", metavar="ACTION")
    actions.required = True
    dev = actions.add_parser(
        "dev",
        help="write a self-signed certificate and key for local development",
        description=(
            "Write <out>/<prefix>-cert.pem and <out>/<prefix>-key.pem: a self-signed "
            "ECDSA P-256 certificate for localhost, 127.0.0.1 and ::1 (plus --name). "
            "Clients trust it by using the certificate file as their CA file. Never use "
            "one in production."
        ),
    )
    dev.add_argument("-o", "--out", default=".", help="output directory (default: .)")
    dev.add_argument(
        "--name",
        action="append",
        default=[],
        metavar="NAME",
        help="extra DNS name or IP address (repeatable)",
    )
    dev.add_argument("--days", type=int, default=30, help="validity in days (default: 30)")
    dev.add_argument("--prefix", default="dev", help="file name prefix (default: dev)")
    dev.add_argument("--force", action="store_true", help="overwrite existing files")
    dev.set_defaults(func=run_dev)


def run_dev(args: argparse.Namespace) -> int:
    """Write the pair; 0, or 2 with one stderr line when the files exist or cannot be written."""
    from flare_runtime.transports.quic_certs import write_dev_certificate  # noqa: PLC0415 -- keeps `flare --help` fast

    try:
        files = write_dev_certificate(
            args.out,
            names=args.name,
            days=args.days,
            prefix=args.prefix,
            overwrite=args.force,
        )
    except (FileExistsError, ValueError, OSError) as error:
        print(f"flare cert dev: error: {error}", file=sys.stderr)
        return 2
    print(f"certificate: {files.certificate}")
    print(f"private key: {files.private_key}")
    return 0
