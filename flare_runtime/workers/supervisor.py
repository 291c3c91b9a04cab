"""The supervisor of ``flare serve --workers N``: N worker processes, restarts, drain on a signal.

`supervise` is the whole command. What it does, in order:

1. claims every served address for the workers (`flare_runtime.workers.ports`):
   a port in use is refused, port 0 becomes one real port;
2. imports the served transports' modules (and uvloop with ``--uvloop``,
   and the ``--preload`` modules), then freezes the garbage collector's view
   of them (`gc.freeze`), so the workers it forks share those pages instead
   of copying them (measured in bench/README.md, "Workers": fork vs spawn);
3. forks N workers (`flare_runtime.workers.worker.run_worker`). Each imports
   the target itself -- its own Server, its own ClusterNode and node id --
   and reports one status line: ready, refused (the server's parts cannot be
   shared: `flare_runtime.sharing`), or failed;
4. prints ``flare: worker I ready (pid P)`` per worker, and the usual
   ``flare: serving ...`` lines once all are ready;
5. restarts a worker that dies (``restart_delay`` doubling per consecutive
   failure up to ``max_restart_delay``; the count resets once a worker has
   served for ``stable_after``); the other workers are not touched;
6. on SIGTERM or SIGINT sends SIGTERM to every worker (each drains: GOAWAY,
   calls in flight finish within ``grace``), and returns 0 once all exited
   cleanly. A second signal, or workers still running ``grace +
   STOP_SLACK`` seconds after the first, gets SIGKILL sent to every worker
   and returns 1.

A failure before the first workers are all ready (a bad target, a refused
configuration, an address a worker cannot use) stops everything and returns
2 with one line on stderr: that configuration will not get better by
restarting. Workers hold a lifeline pipe to the supervisor: if the
supervisor itself is killed, they drain and exit.

The supervisor is a plain blocking loop over ``poll`` (no event loop, no
threads), so forking from it is safe: a child shares no selector or loop
state with it.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import os
import resource
import select
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

from flare_runtime.workers.ports import ReservedPort, reserve_port
from flare_runtime.workers.worker import (
    EXIT_REFUSED,
    FAILED,
    READY,
    REFUSED,
    WorkerPlan,
    flush_standard_streams,
    run_worker,
)

if TYPE_CHECKING:
    from flare_runtime.server import TLSFiles

STOP_SLACK = 5.0
"""Seconds past the grace period the supervisor waits for workers to exit before SIGKILL."""

EXIT_CONFIGURATION = 2
EXIT_ESCALATED = 1


@dataclass(slots=True)
class _Worker:
    """One worker slot: its index stays, its process changes with each restart."""

    index: int
    pid: int = 0
    status_fd: int = -1
    buffer: bytes = b""
    ready_at: float | None = None
    """When its current process reported ready (None: not yet)."""
    report: str = ""
    """The last refused/failed line of its current process."""
    refused: bool = False
    failures: int = 0
    """Consecutive deaths without `stable_after` seconds of service."""
    restart_at: float | None = None
    """When to start it again (None: running, or not to be restarted)."""
    ever_ready: bool = False


@dataclass(slots=True)
class Supervisor:
    """Runs the workers of one ``flare serve --workers N`` (see the module docstring)."""

    plan: WorkerPlan
    reserved: Mapping[str, ReservedPort]
    secure: bool = False
    restart_delay: float = 0.1
    max_restart_delay: float = 10.0
    stable_after: float = 30.0
    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)
    _workers: list[_Worker] = field(default_factory=list)
    _stopping_since: float | None = None
    _escalated: bool = False
    _announced: bool = False
    _exit: int | None = None
    _signals: list[int] = field(default_factory=list)
    _wakeup: tuple[int, int] = (-1, -1)
    _lifeline: tuple[int, int] = (-1, -1)

    def run(self) -> int:
        """Start every worker and supervise them until they have all exited; the exit status."""
        self._wakeup = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._lifeline = os.pipe2(os.O_CLOEXEC)
        handled = (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD)
        previous = {sig: signal.signal(sig, self._note_signal) for sig in handled}
        previous_wakeup = signal.set_wakeup_fd(self._wakeup[1], warn_on_full_buffer=False)
        try:
            self._workers = [_Worker(index) for index in range(self.plan.workers)]
            for worker in self._workers:
                self._start(worker)
            return self._loop()
        finally:
            signal.set_wakeup_fd(previous_wakeup)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            for worker in self._workers:
                if worker.pid:
                    _kill(worker.pid, signal.SIGKILL)
                    _reap(worker.pid)
                _close(worker.status_fd)
            for fd in (*self._wakeup, *self._lifeline):
                _close(fd)

    # ------------------------------------------------------------ processes

    def _start(self, worker: _Worker) -> None:
        status_read, status_write = os.pipe2(os.O_CLOEXEC)
        flush_standard_streams()
        pid = os.fork()
        if pid == 0:  # the worker: never returns into the supervisor
            code = 1
            try:
                code = self._become_worker(worker, status_read, status_write)
            finally:
                flush_standard_streams()
                os._exit(code)
        os.close(status_write)
        os.set_blocking(status_read, False)
        worker.pid = pid
        worker.status_fd = status_read
        worker.buffer = b""
        worker.ready_at = None
        worker.report = ""
        worker.refused = False
        worker.restart_at = None

    def _become_worker(self, worker: _Worker, status_read: int, status_write: int) -> int:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for fd in (status_read, *self._wakeup, self._lifeline[1]):
            _close(fd)
        for other in self._workers:
            if other is not worker:
                _close(other.status_fd)
        sockets = {}
        for name, reserved in self.reserved.items():
            own = reserved.socket_for(worker.index)
            for sock in reserved.sockets:
                if sock is not own:
                    sock.close()
            if own is not None:
                sockets[name] = own
        return run_worker(self.plan, worker.index, sockets, status_write, self._lifeline[0])

    # ------------------------------------------------------------ the loop

    def _loop(self) -> int:
        while True:
            if self._exit is not None and not any(worker.pid for worker in self._workers):
                return self._exit
            poller = select.poll()
            poller.register(self._wakeup[0], select.POLLIN)
            for worker in self._workers:
                if worker.status_fd >= 0:
                    poller.register(worker.status_fd, select.POLLIN)
            timeout = self._next_deadline()
            wait = None if timeout is None else max(0.0, timeout - time.monotonic()) * 1000
            try:
                events = poller.poll(wait)
            except InterruptedError:
                events = []
            for fd, _ in events:
                if fd == self._wakeup[0]:
                    with contextlib.suppress(BlockingIOError):
                        while os.read(fd, 512):
                            pass
                else:
                    self._read_status(fd)
            self._handle_signals()
            self._reap_exited()
            self._handle_deadlines()

    def _next_deadline(self) -> float | None:
        deadlines = [w.restart_at for w in self._workers if w.restart_at is not None]
        if self._stopping_since is not None and not self._escalated:
            deadlines.append(self._stopping_since + self.plan.grace + STOP_SLACK)
        return min(deadlines) if deadlines else None

    def _note_signal(self, signum: int, _frame: object) -> None:
        self._signals.append(signum)

    def _handle_signals(self) -> None:
        signals, self._signals = self._signals, []
        for signum in signals:
            if signum in (signal.SIGTERM, signal.SIGINT):
                if self._stopping_since is None:
                    self._stop(0)
                else:
                    self._escalate("a second signal")

    def _stop(self, exit_status: int) -> None:
        """Drain every worker (SIGTERM); `exit_status` unless a worker fails to stop."""
        self._stopping_since = time.monotonic()
        self._exit = exit_status if self._exit is None else self._exit
        for worker in self._workers:
            worker.restart_at = None
            if worker.pid:
                _kill(worker.pid, signal.SIGTERM)

    def _escalate(self, why: str) -> None:
        """SIGKILL every worker still running (once; SIGKILL cannot be refused)."""
        if self._escalated:
            return
        self._escalated = True
        alive = [worker for worker in self._workers if worker.pid]
        if alive:
            pids = ", ".join(str(worker.pid) for worker in alive)
            self._say_error(f"{why}: killing workers still running (pid {pids})")
        for worker in alive:
            _kill(worker.pid, signal.SIGKILL)
        self._exit = EXIT_ESCALATED if self._exit in (None, 0) else self._exit

    def _handle_deadlines(self) -> None:
        now = time.monotonic()
        if self._stopping_since is not None:
            if now >= self._stopping_since + self.plan.grace + STOP_SLACK and any(
                worker.pid for worker in self._workers
            ):
                self._escalate(f"not stopped {self.plan.grace + STOP_SLACK:g} s after the signal")
            return
        for worker in self._workers:
            if worker.restart_at is not None and now >= worker.restart_at:
                self._start(worker)

    # ------------------------------------------------------------ reports and exits

    def _read_status(self, fd: int) -> None:
        worker = next((w for w in self._workers if w.status_fd == fd), None)
        if worker is None:
            return
        try:
            data = os.read(fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            _close(fd)
            worker.status_fd = -1
            return
        worker.buffer += data
        while b"\n" in worker.buffer:
            line, _, worker.buffer = worker.buffer.partition(b"\n")
            self._status_line(worker, line.decode("utf-8", "replace"))

    def _status_line(self, worker: _Worker, line: str) -> None:
        kind, _, text = line.partition(" ")
        if kind == READY:
            worker.ready_at = time.monotonic()
            worker.ever_ready = True
            self._say(f"flare: worker {worker.index} ready (pid {worker.pid})")
            if not self._announced and all(w.ever_ready for w in self._workers):
                self._announced = True
                self._announce()
        elif kind in (REFUSED, FAILED):
            worker.report = text
            worker.refused = kind == REFUSED

    def _announce(self) -> None:
        from flare_runtime.workers.target import client_url  # noqa: PLC0415

        for name, reserved in self.reserved.items():
            url = client_url(name, reserved.address, reserved.port, secure=self.secure)
            self._say(f"flare: serving {name} on port {reserved.port} ({url})")

    def _reap_exited(self) -> None:
        for worker in self._workers:
            if not worker.pid:
                continue
            try:
                pid, status = os.waitpid(worker.pid, os.WNOHANG)
            except ChildProcessError:
                pid, status = worker.pid, 0
            if pid == 0:
                continue
            if worker.status_fd >= 0:  # read what it said before it went
                self._read_status(worker.status_fd)
                _close(worker.status_fd)
                worker.status_fd = -1
            worker.pid = 0
            self._exited(worker, pid, status)

    def _exited(self, worker: _Worker, pid: int, status: int) -> None:
        how = _describe_exit(status)
        clean = os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        if self._stopping_since is not None:
            # SIGTERM kills a worker still importing its target: the stop asked for.
            clean = clean or (os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM)
            if not clean and self._exit == 0:
                self._exit = EXIT_ESCALATED
                self._say_error(f"worker {worker.index} (pid {pid}) {how} while stopping")
            return
        refused = worker.refused or (
            os.WIFEXITED(status) and os.WEXITSTATUS(status) == EXIT_REFUSED
        )
        if refused or not self._announced:
            reason = worker.report or f"worker {worker.index} (pid {pid}) {how}"
            if refused:
                reason = f"--workers {self.plan.workers}: {reason}"
            self._say_error(reason)
            self._stop(EXIT_CONFIGURATION)
            return
        now = time.monotonic()
        if worker.ready_at is not None and now - worker.ready_at >= self.stable_after:
            worker.failures = 0
        worker.failures += 1
        delay = min(self.restart_delay * 2 ** (worker.failures - 1), self.max_restart_delay)
        detail = f": {worker.report}" if worker.report else ""
        self._say_error(
            f"worker {worker.index} (pid {pid}) {how}{detail}; restarting in {delay:g} s"
        )
        worker.restart_at = now + delay

    def _say(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    def _say_error(self, line: str) -> None:
        print(f"flare serve: {line}", file=self.err, flush=True)


def supervise(
    target: str,
    addresses: Mapping[str, str],
    *,
    workers: int,
    tls: TLSFiles | None = None,
    grace: float = 10.0,
    uvloop: bool = False,
    preload: Sequence[str] = (),
    out: TextIO | None = None,
    err: TextIO | None = None,
    factory: Callable[[], Awaitable[Any]] | None = None,
) -> int:
    """``flare serve`` with ``--workers N``: serve `target` on `addresses` from N processes.

    `preload` names modules to import before forking besides the served
    transports (``--preload``: libraries the target imports, so the workers
    share them). `factory`, when given, builds each worker's server in place
    of importing `target` (`WorkerPlan.factory`). Returns the exit status (the
    module docstring says which).
    """
    from flare_runtime.errors import ConfigurationError  # noqa: PLC0415
    from flare_runtime.transport_registry import get_transport  # noqa: PLC0415

    err = err or sys.stderr
    out = out or sys.stdout
    if not hasattr(os, "fork"):
        print("flare serve: --workers needs os.fork (Linux or macOS)", file=err)
        return EXIT_CONFIGURATION
    if not addresses:
        print("flare serve: give at least one of --ws, --quic, --grpc, --listen", file=err)
        return EXIT_CONFIGURATION
    kinds: dict[str, str] = {}
    modules = ["flare_runtime.server", "flare_runtime.workers.target"]
    try:
        for name in addresses:
            spec = get_transport(name)
            if spec.shared_port is None:
                raise ConfigurationError(
                    f"--workers {workers}: transport {name!r} cannot share its port "
                    "between worker processes (its TransportSpec declares no shared_port)"
                )
            kinds[name] = spec.shared_port
            spec.load_listener()  # imports the transport here, before the fork
            if name == "quic":
                modules.append("flare_runtime.transports.quic_workers")
    except ConfigurationError as error:
        print(f"flare serve: {error}", file=err)
        return EXIT_CONFIGURATION
    if uvloop:
        modules.append("uvloop")
    modules += preload
    reserved: dict[str, ReservedPort] = {}
    directory = tempfile.mkdtemp(prefix="flare-workers-")
    try:
        for name, address in addresses.items():
            try:
                reserved[name] = reserve_port(name, address, kinds[name], workers)
            except (OSError, ConfigurationError) as error:
                print(f"flare serve: cannot listen on {address} ({name}): {error}", file=err)
                return EXIT_CONFIGURATION
        for module in modules:
            try:
                importlib.import_module(module)
            except ImportError as error:
                print(f"flare serve: --preload {module}: {error}", file=err)
                return EXIT_CONFIGURATION
        raise_open_files_limit()
        plan = WorkerPlan(
            target=target,
            addresses={name: port.worker_address for name, port in reserved.items()},
            workers=workers,
            directory=directory,
            tls=tls,
            grace=grace,
            uvloop=uvloop,
            factory=factory,
        )
        gc.collect()
        gc.freeze()
        try:
            supervisor = Supervisor(plan, reserved, secure=tls is not None, out=out, err=err)
            return supervisor.run()
        finally:
            gc.unfreeze()
    finally:
        for port in reserved.values():
            port.close()
        shutil.rmtree(directory, ignore_errors=True)


def raise_open_files_limit() -> None:
    """Raise the soft limit on open files to the hard one (the workers inherit it).

    Every connection is a file descriptor; the soft limit (often 1,024) is
    only a default, the hard one (20,000 on the machines Flare is measured on)
    is what the administrator allows.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _describe_exit(status: int) -> str:
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        return f"was killed by {name}"
    return f"exited with status {os.WEXITSTATUS(status) if os.WIFEXITED(status) else status}"


def _kill(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def _close(fd: int) -> None:
    if fd >= 0:
        with contextlib.suppress(OSError):
            os.close(fd)
