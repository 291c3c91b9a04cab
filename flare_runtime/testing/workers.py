"""`ServedWorkers`: ``flare serve ... --workers N`` as a subprocess, for tests.

::

    async with await ServedWorkers.start(
        "app:server", {"websocket": "127.0.0.1:0"}, workers=2, env=env
    ) as served:
        url = served.urls["websocket"]          # ws://127.0.0.1:PORT
        served.pids                             # {worker index: pid}
        os.kill(served.pids[0], signal.SIGKILL)
        new_pid = await served.wait_ready(0)    # the supervisor restarted it
        status = await served.stop()            # SIGTERM; the exit status

It reads the command's stdout as it comes (``flare: worker I ready (pid P)``,
``flare: serving NAME on port P (URL)``) and keeps its stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

WORKER_READY = re.compile(r"^flare: worker (\d+) ready \(pid (\d+)\)$")
SERVING = re.compile(r"^flare: serving (\S+) on port (\d+) \((\S+)\)$")


class ServedWorkers:
    """A running ``flare serve --workers N`` (see the module docstring)."""

    def __init__(self, process: asyncio.subprocess.Process, workers: int) -> None:
        self.process = process
        self.workers = workers
        self.urls: dict[str, str] = {}
        """Transport name -> the URL the supervisor printed."""
        self.pids: dict[int, int] = {}
        """Worker index -> the pid of its current process."""
        self.lines: list[str] = []
        """Every stdout line so far."""
        self._changed = asyncio.Event()
        self._stderr = bytearray()
        self._readers = [
            asyncio.create_task(self._read_stdout()),
            asyncio.create_task(self._read_stderr()),
        ]

    @classmethod
    async def start(
        cls,
        target: str,
        addresses: Mapping[str, str],
        *,
        workers: int,
        arguments: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
        timeout: float = 30.0,
    ) -> ServedWorkers:
        """Run ``flare serve target`` on `addresses` (transport -> host:port) with `workers`
        workers and `arguments`; return once it printed every serving line."""
        command = [sys.executable, "-m", "flare_runtime.cli", "serve", target]
        for name, address in addresses.items():
            if name in _OPTIONS:
                command += [_OPTIONS[name], address]
            else:
                command += ["--listen", f"{name}={address}"]
        command += ["--workers", str(workers), *arguments]
        process = await asyncio.create_subprocess_exec(
            *command,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        served = cls(process, workers)
        try:
            await served.wait_for(lambda: len(served.urls) == len(addresses), timeout)
        except BaseException:
            await served.kill()
            raise
        return served

    async def wait_for(self, condition: Callable[[], bool], timeout: float = 30.0) -> None:
        """Wait until ``condition()`` is true; `AssertionError` (with stderr) if the command
        exits first, `TimeoutError` if `timeout` seconds pass first."""
        async with asyncio.timeout(timeout):
            while not condition():
                if self.process.returncode is not None and self._readers[0].done():
                    raise AssertionError(
                        f"flare serve exited ({self.process.returncode}): {self.stderr}"
                    )
                self._changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), 0.5)

    async def wait_ready(self, worker: int, *, other_than: int | None = None) -> int:
        """Wait until worker `worker` runs a process other than `other_than` (default: its
        current one) and it is ready; its pid."""
        old = self.pids.get(worker) if other_than is None else other_than
        await self.wait_for(lambda: self.pids.get(worker) not in (None, old))
        return self.pids[worker]

    @property
    def stderr(self) -> str:
        """What the command wrote to stderr so far."""
        return self._stderr.decode("utf-8", "replace")

    async def stop(self, sig: signal.Signals | None = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Send `sig` (None: none, it was sent already); wait for the command to exit; its
        exit status."""
        if sig is not None and self.process.returncode is None:
            self.process.send_signal(sig)
        try:
            async with asyncio.timeout(timeout):
                status = await self.process.wait()
                await asyncio.gather(*self._readers)
        except TimeoutError:
            await self.kill()
            raise
        return status

    async def kill(self) -> None:
        """SIGKILL the supervisor and every worker it started (a test's cleanup)."""
        for pid in self.pids.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.process.returncode is None:
            self.process.kill()
        await self.process.wait()
        for reader in self._readers:
            reader.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)

    async def __aenter__(self) -> ServedWorkers:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self.process.returncode is None:
            await self.kill()

    async def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        async for raw in self.process.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.lines.append(line)
            ready = WORKER_READY.match(line)
            if ready:
                self.pids[int(ready.group(1))] = int(ready.group(2))
            serving = SERVING.match(line)
            if serving:
                self.urls[serving.group(1)] = serving.group(3)
            self._changed.set()
        self._changed.set()

    async def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        async for raw in self.process.stderr:
            self._stderr += raw
            self._changed.set()


_OPTIONS = {"websocket": "--ws", "quic": "--quic", "grpc": "--grpc"}
