"""``flare serve [module:attr] [--config FILE] [--ws|--quic|--grpc|--listen ...] [--workers N]``.

What the command does and promises is its help text, `DESCRIPTION`. Every
flag is a configuration key (`flare_runtime.config`): the file, ``FLARE_*``
variables and flags merge into one `FlareConfig`, which builds the server
(`flare_runtime.config.build`). With ``--workers N`` (N > 1) the process is
a supervisor (`flare_runtime.workers.supervisor`) of N worker processes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

DESCRIPTION = """\
Serve a flare_runtime.Server over WebSocket, QUIC and gRPC.

TARGET is module:attr naming a Server, or a list of services (handlers), or a
callable returning either, or an async callable (awaited in the serving
process, for servers whose parts start asynchronously); the current directory
and ./generated are on the import path.

Everything here can come from a configuration file instead: --config FILE,
else ./flare.toml, else [tool.flare] in ./pyproject.toml (docs/operations.md
has every key). FLARE_* environment variables override the file, flags
override both; --set KEY=VALUE sets any key. The file alone can serve the
built-in IM service with its storage and broker, the admin API, metrics and
health probes (--metrics HOST:PORT: /metrics, /healthz, /readyz).
--print-config prints the effective configuration (secrets masked) and exits.
--log-level and --log-format text|json set up the log on stderr;
--access-log writes one line per call. Any registered transport (a plugin's too, see
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
        "target",
        metavar="TARGET",
        nargs="?",
        help="module:attr of a Server or a list of services (or a callable returning one); "
        "default: the configuration's target",
    )
    parser.add_argument(
        "--config", metavar="FILE", help="flare.toml, or a pyproject.toml with [tool.flare]"
    )
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print the effective configuration (secrets masked) and exit",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set any configuration key (e.g. limits.close_timeout=2); repeatable",
    )
    parser.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error", "critical"],
        help="least severe log level written (default info)",
    )
    parser.add_argument(
        "--log-format", choices=["text", "json"], help="log lines as text (default) or JSON"
    )
    parser.add_argument(
        "--access-log", action="store_true", default=None, help="log one line per call"
    )
    parser.add_argument(
        "--metrics",
        metavar="HOST:PORT",
        help="serve /metrics, /healthz and /readyz over HTTP here",
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
        "--grace", type=float, metavar="SECONDS", help="shutdown grace period (default 10)"
    )
    parser.add_argument("--uvloop", action="store_true", default=None, help="run on uvloop")
    parser.add_argument(
        "--workers",
        type=worker_count,
        metavar="N",
        help="worker processes sharing the ports (auto: one per CPU; default 1: no supervisor)",
    )
    parser.add_argument(
        "--preload",
        action="append",
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


def _flags(args: argparse.Namespace) -> dict[str, tuple[object, str]] | str:
    """The configuration keys the flags set, or a one-line error."""
    flags: dict[str, tuple[object, str]] = {}
    for dotted, value, flag in (
        ("target", args.target, "TARGET"),
        ("listen.websocket", args.ws, "--ws"),
        ("listen.quic", args.quic, "--quic"),
        ("listen.grpc", args.grpc, "--grpc"),
        ("tls.cert_file", args.tls_cert, "--tls-cert"),
        ("tls.key_file", args.tls_key, "--tls-key"),
        ("serve.grace", args.grace, "--grace"),
        ("serve.uvloop", args.uvloop, "--uvloop"),
        ("serve.workers", args.workers, "--workers"),
        ("serve.preload", args.preload, "--preload"),
        ("logging.level", args.log_level, "--log-level"),
        ("logging.format", args.log_format, "--log-format"),
        ("logging.access_log", args.access_log, "--access-log"),
        ("metrics.listen", args.metrics, "--metrics"),
    ):
        if value is not None:
            flags[dotted] = (value, flag)
    seen: set[str] = set()
    for given in args.listen:
        name, sep, address = given.partition("=")
        if not sep or not name or not address or name in seen:
            return f"expected --listen NAME=HOST:PORT once per NAME, got {given!r}"
        seen.add(name)
        if f"listen.{name}" in flags:
            return f"{name} is given twice: as {flags[f'listen.{name}'][1]} and in --listen"
        flags[f"listen.{name}"] = (address, "--listen")
    for given in args.set:
        key, sep, value = given.partition("=")
        if not sep or not key:
            return f"expected --set KEY=VALUE, got {given!r}"
        flags[key.strip()] = (value, "--set")
    return flags


def run(args: argparse.Namespace) -> int:
    """Serve until interrupted; 0 on a clean stop, 2 on a configuration error."""
    from pathlib import Path  # noqa: PLC0415 -- keeps `flare --help` fast

    from flare_runtime.config.build import build, build_server, tls_files  # noqa: PLC0415
    from flare_runtime.config.load import (  # noqa: PLC0415
        ConfigError,
        LoadedConfig,
        load_config,
        print_config,
        secrets,
    )
    from flare_runtime.errors import ConfigurationError  # noqa: PLC0415
    from flare_runtime.observability.logs import configure_logging  # noqa: PLC0415
    from flare_runtime.workers.target import client_url  # noqa: PLC0415

    flags = _flags(args)
    if isinstance(flags, str):
        print(f"flare serve: {flags}", file=sys.stderr)
        return 2
    try:
        loaded: LoadedConfig = load_config(
            Path(args.config) if args.config else None, env=os.environ, flags=flags
        )
        config = loaded.config
        if args.print_config:
            sys.stdout.write(print_config(loaded))
            return 0
        tls = tls_files(config)
    except ConfigError as exc:
        print(f"flare serve: {exc}", file=sys.stderr)
        return 2
    if not (config.target or config.im.enabled or config.admin.enabled):
        print(
            "flare serve: nothing to serve: give TARGET, or a configuration with a target "
            "or [im] enabled (docs/operations.md)",
            file=sys.stderr,
        )
        return 2
    configure_logging(config.logging.level, config.logging.format, secrets=secrets(loaded))
    served = dict(config.listen)
    workers = config.serve.workers
    count = worker_count(str(workers)) if workers == "auto" else int(workers)
    if count > 1:
        from flare_runtime.workers.supervisor import supervise  # noqa: PLC0415

        return supervise(
            config.target or "flare serve configuration",
            served,
            workers=count,
            tls=tls,
            grace=config.serve.grace,
            uvloop=config.serve.uvloop,
            preload=config.serve.preload,
            factory=lambda: build_server(loaded),
        )

    async def main() -> None:
        built = await build(loaded)
        server = built.server
        await server.start(listen=served, tls=tls)
        for name, address in served.items():
            port = server.port(name)
            url = client_url(name, address, port, secure=tls is not None)
            print(f"flare: serving {name} on port {port} ({url})", flush=True)
        if built.metrics is not None:
            print(f"flare: metrics on port {built.metrics.port}", flush=True)
        await server.serve_started(grace=config.serve.grace)

    try:
        if config.serve.uvloop:
            import uvloop  # noqa: PLC0415 -- keeps `flare --help` fast

            uvloop.run(main())
        else:
            asyncio.run(main())
    except (ConfigurationError, ImportError) as exc:
        print(f"flare serve: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"flare serve: cannot listen: {exc}", file=sys.stderr)
        return 2
    return 0
