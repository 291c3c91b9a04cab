"""``flare serve module:attr [--ws|--quic|--grpc|--listen ...] [--workers N]``.

What the command does and promises is its help text, `DESCRIPTION`. With
``--workers N`` (N > 1) the process is a supervisor
(`flare_runtime.workers.supervisor`) of N worker processes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    pass

DESCRIPTION = """\
Serve a flare_runtime.Server over WebSocket, QUIC and gRPC.

TARGET is module:attr naming a Server, or a callable returning one, or an
async callable (awaited in the serving process, for servers whose parts start
asynchronously); the current directory and ./generated are on the import
path. Any registered transport (a plugin's too, see
docs/transports/writing-a-transport.md) is served with --listen
NAME=HOST:PORT. QUIC needs --tls-cert and --tls-key (flare cert dev writes a
development pair); given, they put WebSocket and gRPC on TLS too. Port 0
picks a free port. A port already in use is an error ("address already in
use"), never shared by accident. Once every listener accepts connections, one
line per transport goes to stdout:

  flare: serving quic on port 8443 (quic://localhost:8443)

Serves until SIGINT or SIGTERM, then shuts down gracefully (--grace seconds)
and exits 0; exit status 2 for a bad target or an address it cannot listen on.

--workers N (auto: one per CPU) runs N worker processes, each a whole server
with its own event loop, sharing every port with SO_REUSEPORT (the kernel
spreads connections over them; QUIC datagrams reach the worker holding their
connection even when a client's address changes). A line per worker goes to
stdout as it becomes ready:

  flare: worker 1 ready (pid 4242)

A worker that dies is restarted (backoff from 0.1 s to 10 s); the others and
their connections are not touched. --preload MODULE imports a library the
target uses in the supervisor, so all workers share its memory (the target
itself is imported by each worker). SIGTERM or SIGINT drains every worker
(GOAWAY, calls in flight finish within --grace) and exits 0 once all have
exited; a second signal, or workers still running --grace + 5 s later, kills
them (SIGKILL) and exits 1. A server whose parts cannot be shared by several
processes (an in-process cluster broker, the IM on one SQLite file) is refused
with exit status 2 and one line saying why (docs/cluster.md, "Workers").
"""


def configure(parser: argparse.ArgumentParser) -> None:
    """Set up ``flare serve``'s arguments."""
    parser.description = DESCRIPTION
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "target", metavar="TARGET", help="module:attr of a Server (or a callable returning one)"
    )
    parser.add_argument("--ws", metavar="HOST:PORT", help="serve WebSocket here (e.g. :8080)")
    parser.add_argument("--quic", metavar="HOST:PORT", help="serve QUIC here (needs TLS)")
    parser.add_argument("--grpc", metavar="HOST:PORT", help="serve gRPC here")
    parser.add_argument(
        "--listen",
        action="append",
        default=[],
        metavar="NAME=HOST:PORT",
        help="serve the registered transport NAME here (e.g. a plugin's: tcp=:9000); repeatable",
    )
    parser.add_argument("--tls-cert", metavar="FILE", help="PEM certificate chain (TLS 1.3)")
    parser.add_argument("--tls-key", metavar="FILE", help="PEM private key")
    parser.add_argument(
        "--grace", type=float, default=10.0, metavar="SECONDS", help="shutdown grace period"
    )
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop")
    parser.add_argument(
        "--workers",
        type=worker_count,
        default=1,
        metavar="N",
        help="worker processes sharing the ports (auto: one per CPU; default 1: no supervisor)",
    )
    parser.add_argument(
        "--preload",
        action="append",
        default=[],
        metavar="MODULE",
        help="with --workers: import MODULE in the supervisor before forking, so the workers "
        "share its memory (a library the target imports; it must start nothing); repeatable",
    )
    parser.set_defaults(func=run)


def worker_count(text: str) -> int:
    """``--workers``: a positive number, or ``auto`` for the CPUs this process may use."""
    if text == "auto":
        affinity = getattr(os, "sched_getaffinity", None)
        return len(affinity(0)) if affinity is not None else os.cpu_count() or 1
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number or auto, got {text!r}")
    return int(text)


def run(args: argparse.Namespace) -> int:
    """Serve until interrupted; 0 on a clean stop, 2 on a configuration error."""
    from flare_runtime.errors import ConfigurationError  # noqa: PLC0415 -- keeps `flare --help` fast
    from flare_runtime.server import TLSFiles  # noqa: PLC0415 -- keeps `flare --help` fast
    from flare_runtime.workers.target import client_url, load_server, resolve_server  # noqa: PLC0415

    if bool(args.tls_cert) != bool(args.tls_key):
        print("flare serve: give both --tls-cert and --tls-key", file=sys.stderr)
        return 2
    tls = TLSFiles(args.tls_cert, args.tls_key) if args.tls_cert else None
    listen: dict[str, str] = {}
    for given in args.listen:
        name, sep, address = given.partition("=")
        if not sep or not name or not address or name in listen:
            print(
                f"flare serve: expected --listen NAME=HOST:PORT once per NAME, got {given!r}",
                file=sys.stderr,
            )
            return 2
        listen[name] = address
    builtin = {"websocket": args.ws, "quic": args.quic, "grpc": args.grpc}
    if args.workers > 1:
        from flare_runtime.workers.supervisor import supervise  # noqa: PLC0415

        served = {name: address for name, address in builtin.items() if address} | listen
        return supervise(
            args.target,
            served,
            workers=args.workers,
            tls=tls,
            grace=args.grace,
            uvloop=args.uvloop,
            preload=args.preload,
        )
    try:
        loaded = load_server(args.target)
    except (ConfigurationError, ImportError) as exc:
        print(f"flare serve: {exc}", file=sys.stderr)
        return 2

    async def main() -> None:
        server = await resolve_server(args.target, loaded)
        await server.start(
            websocket=args.ws, quic=args.quic, grpc=args.grpc, listen=listen, tls=tls
        )
        served = {name: address for name, address in builtin.items() if address} | listen
        for name, address in served.items():
            port = server.port(name)
            url = client_url(name, address, port, secure=tls is not None)
            print(f"flare: serving {name} on port {port} ({url})", flush=True)
        await server.serve_started(grace=args.grace)

    try:
        if args.uvloop:
            import uvloop  # noqa: PLC0415 -- keeps `flare --help` fast

            uvloop.run(main())
        else:
            asyncio.run(main())
    except ConfigurationError as exc:
        print(f"flare serve: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"flare serve: cannot listen: {exc}", file=sys.stderr)
        return 2
    return 0
