"""`ServedProcess`: a server run as a user runs it, ``flare serve`` in a child process.

For tests that need the server out of their own process: to measure its
memory (`rss`) while a hostile client works on it, or to kill it::

    async with ServedProcess.start("examples.chat.service:server", websocket=True) as served:
        port = served.ports["websocket"]
        before = served.rss()
        ...

The child runs the ``flare`` command installed beside the running Python, on
127.0.0.1 port 0 for each transport asked for, and reports each port on its
stdout (``flare: serving websocket on port N (...)``). QUIC needs `tls`
(e.g. `flare_runtime.transports.quic_certs.write_dev_certificate`). Its stderr
(its log) goes to a file, `stderr_text`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sys
import tempfile
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import IO

from flare_runtime.transports.quic_certs import CertificateFiles

__all__ = ["ServedProcess"]

_SERVING = re.compile(r"^flare: serving (websocket|quic|grpc) on port (\d+) ")


class ServedProcess:
    """A running ``flare serve`` child process and the ports it listens on."""

    def __init__(
        self, process: asyncio.subprocess.Process, ports: dict[str, int], stderr: IO[bytes]
    ) -> None:
        self.process = process
        self.ports = ports
        """Transport name ("websocket", "quic", "grpc") → bound port on 127.0.0.1."""
        self._stderr = stderr

    def stderr_text(self) -> str:
        """Everything the child wrote to stderr so far (its log)."""
        self._stderr.seek(0)
        return self._stderr.read().decode("utf-8", "replace")

    @classmethod
    @contextlib.asynccontextmanager
    async def start(
        cls,
        target: str,
        *,
        websocket: bool = False,
        quic: bool = False,
        grpc: bool = False,
        tls: CertificateFiles | None = None,
        cwd: Path | None = None,
        env: Mapping[str, str | None] | None = None,
        timeout: float = 30.0,
    ) -> AsyncIterator[ServedProcess]:
        """Run ``flare serve target`` with the transports asked for, until the block ends.

        `flare serve` puts its working directory `cwd` and ``cwd/generated`` on the
        import path. `env` changes this process's environment for the child: a
        value of None removes the variable. Raises `RuntimeError` if the child
        exits or prints something unexpected before listening within `timeout`
        seconds; the child is stopped when the block ends.
        """
        arguments = ["serve", target, "--grace", "1"]
        for name, wanted in (("--ws", websocket), ("--quic", quic), ("--grpc", grpc)):
            if wanted:
                arguments += [name, "127.0.0.1:0"]
        if tls is not None:
            arguments += ["--tls-cert", str(tls.certificate), "--tls-key", str(tls.private_key)]
        environment = dict(os.environ)
        for name, value in (env or {}).items():
            if value is None:
                environment.pop(name, None)
            else:
                environment[name] = value
        with tempfile.TemporaryFile() as stderr:  # a file: a child logging must never block
            served = await cls._spawn(
                arguments,
                wanted=sum((websocket, quic, grpc)),
                cwd=cwd,
                environment=environment,
                stderr=stderr,
                timeout=timeout,
            )
            try:
                yield served
            finally:
                await served.stop()

    @classmethod
    async def _spawn(
        cls,
        arguments: list[str],
        *,
        wanted: int,
        cwd: Path | None,
        environment: dict[str, str],
        stderr: IO[bytes],
        timeout: float,
    ) -> ServedProcess:
        flare = Path(sys.executable).with_name("flare")
        process = await asyncio.create_subprocess_exec(
            str(flare),
            *arguments,
            cwd=cwd,
            env=environment,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
        )
        assert process.stdout is not None
        ports: dict[str, int] = {}
        try:
            async with asyncio.timeout(timeout):
                while len(ports) < wanted:
                    line = (await process.stdout.readline()).decode()
                    match = _SERVING.match(line)
                    if match is None:
                        stderr.seek(0)
                        error = stderr.read().decode("utf-8", "replace")[-2000:]
                        raise RuntimeError(f"flare serve did not start: {line!r} {error}")
                    ports[match.group(1)] = int(match.group(2))
        except BaseException:
            if process.returncode is None:
                process.kill()
            await process.wait()
            raise
        return cls(process, ports, stderr)

    def rss(self) -> int:
        """The child's resident memory in bytes (Linux: /proc/<pid>/status, VmRSS)."""
        status = Path(f"/proc/{self.process.pid}/status").read_text(encoding="ascii")
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS line in /proc/<pid>/status")

    @property
    def alive(self) -> bool:
        """True while the child has not exited."""
        return self.process.returncode is None

    async def stop(self) -> None:
        """Terminate the child (SIGTERM, then SIGKILL after 10 s) and reap it."""
        if self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 10.0)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        if self.process.stdout is not None:
            await self.process.stdout.read()
