"""One worker process: load the server, serve on the shared ports, report, drain on a signal.

The supervisor (`flare_runtime.workers.supervisor`) forks each worker from its
own process, which has already imported the served transports (their pages
stay shared between the workers) and has started no event loop. The worker
then runs `run_worker` and leaves with `os._exit`, never returning into the
supervisor's code. What a worker tells the supervisor is one line on its
status pipe (`READY`, `REFUSED`, `FAILED`); everything else it has to say goes
to the standard error it shares with the supervisor.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import traceback
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flare_runtime.errors import ConfigurationError

if TYPE_CHECKING:
    from flare_runtime.server import TLSFiles

READY = "ready"
"""Status line: every listener accepts connections."""
REFUSED = "refused"
"""Status line (followed by the reasons): the server cannot run as several workers."""
FAILED = "failed"
"""Status line (followed by the reason): the worker could not start."""

EXIT_REFUSED = 78
"""Exit status of a worker whose server cannot be shared (EX_CONFIG)."""
EXIT_FAILED = 2
"""Exit status of a worker that could not start (bad target, unusable address...)."""


@dataclass(frozen=True, slots=True)
class WorkerPlan:
    """What every worker of one ``flare serve --workers N`` runs (the same for all)."""

    target: str
    """``module:attr`` naming a Server, or a callable (sync or async) returning one."""
    addresses: Mapping[str, str]
    """Transport name -> ``host:port`` with the port already chosen by the supervisor."""
    workers: int
    directory: str
    """The workers' private directory (`flare_runtime.server.SharedPorts.directory`)."""
    tls: TLSFiles | None = None
    grace: float = 10.0
    uvloop: bool = False
    factory: Callable[[], Awaitable[Any]] | None = None
    """Builds the server in the worker instead of importing `target` (``flare serve``
    from a configuration: the plan is inherited by the fork, the factory with it)."""


def run_worker(
    plan: WorkerPlan,
    worker: int,
    sockets: Mapping[str, socket.socket],
    status_fd: int,
    lifeline_fd: int,
) -> int:
    """Serve as worker `worker` until told to stop; return the exit status.

    `sockets` are the bound sockets the supervisor prepared for this worker
    (by transport name), `status_fd` the pipe to report on, `lifeline_fd`
    a pipe whose end of file means the supervisor is gone (then the worker
    drains and exits as on SIGTERM).
    """
    # Until the loop installs its own handlers: SIGTERM ends a worker that
    # is still starting, and SIGINT (a terminal's Ctrl-C reaches the whole
    # process group) is left to the supervisor, which sends SIGTERM.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    status = _Status(status_fd)
    try:
        main = _serve(plan, worker, sockets, status, lifeline_fd)
        if plan.uvloop:
            import uvloop  # noqa: PLC0415 -- only with --uvloop

            uvloop.run(main)
        else:
            asyncio.run(main)
    except _RefusedError as refused:
        status.send(REFUSED, str(refused))
        return EXIT_REFUSED
    except (ConfigurationError, ImportError) as error:
        status.send(FAILED, str(error))
        return EXIT_FAILED
    except OSError as error:
        status.send(FAILED, f"cannot listen: {error}")
        return EXIT_FAILED
    except Exception as error:  # the application's own failure: keep its traceback
        traceback.print_exc()
        status.send(FAILED, f"{type(error).__name__}: {error}")
        return 1
    return 0


class _RefusedError(Exception):
    """The server answered `Server.sharing_problems`."""


class _Status:
    """The worker's end of its status pipe: one line per report."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def send(self, kind: str, text: str = "") -> None:
        line = " ".join(part for part in (kind, " ".join(text.split())) if part) + "\n"
        with contextlib.suppress(OSError):  # the supervisor is gone: nobody to tell
            os.write(self.fd, line.encode("utf-8", "replace"))


async def _serve(
    plan: WorkerPlan,
    worker: int,
    sockets: Mapping[str, socket.socket],
    status: _Status,
    lifeline_fd: int,
) -> None:
    from flare_runtime.server import SharedPorts  # noqa: PLC0415
    from flare_runtime.workers.target import load_server, resolve_server  # noqa: PLC0415

    # Imported here, in the worker: the target's module builds this worker's
    # own Server (and ClusterNode, whose id names this process).
    loaded = plan.factory() if plan.factory is not None else load_server(plan.target)
    server = await resolve_server(plan.target, loaded)
    if plan.workers > 1:
        problems = server.sharing_problems()
        if problems:
            raise _RefusedError("; ".join(problems))
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_reader(lifeline_fd, _lifeline_read, lifeline_fd, stop, loop)
    shared = SharedPorts(worker, plan.workers, sockets, plan.directory)
    addresses = dict(plan.addresses)
    await server.start(
        websocket=addresses.pop("websocket", None),
        quic=addresses.pop("quic", None),
        grpc=addresses.pop("grpc", None),
        listen=addresses,
        tls=plan.tls,
        shared_ports=shared,
    )
    # A drain asked of this worker (the admin API's Drain) drains the whole
    # host: the supervisor sends every worker SIGTERM, this one included.
    server.drain_handler = _drain_host
    status.send(READY)
    try:
        await stop.wait()
    finally:
        # Signals that come during the drain change nothing (the supervisor
        # escalates with SIGKILL when the drain takes too long).
        await server.shutdown(grace=plan.grace)


def _drain_host() -> None:
    """Ask the supervisor to drain every worker (as SIGTERM to it does)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(os.getppid(), signal.SIGTERM)


def _lifeline_read(fd: int, stop: asyncio.Event, loop: asyncio.AbstractEventLoop) -> None:
    """The supervisor's end of the lifeline closed (it died): stop as on SIGTERM."""
    try:
        data = os.read(fd, 64)
    except BlockingIOError:
        return
    except OSError:
        data = b""
    if not data:
        loop.remove_reader(fd)
        stop.set()


def flush_standard_streams() -> None:
    """Flush stdout and stderr (before `os._exit`, which skips it)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
