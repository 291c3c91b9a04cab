"""`Operated`: ``flare serve`` run from a configuration file, as an operator runs it.

For the operations tests (configuration, logs, metrics, admin)::

    with Operated.start(tmp_path, CONFIG, "--log-format", "json") as served:
        served.ports["websocket"], served.metrics_port
        served.get("/metrics")          # (status, body) over a real HTTP connection
        served.stop()                   # SIGTERM; the exit status
        served.stderr_text()            # its log

`start` writes ``flare.toml`` (the given text) and ``opsapp.py`` (a target
module: ``opsapp:services`` is the chat example's `ChatService`; its Ping
needs no token, its Send does) into `directory` and runs the ``flare``
command installed beside the running Python there, with the repository and
its ``generated/`` on PYTHONPATH. It reads stdout until every listener and
the metrics endpoint reported their ports.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO

__all__ = ["APP", "Operated", "free_port"]

ROOT = Path(__file__).resolve().parents[2]
FLARE = str(Path(sys.executable).with_name("flare"))
APP = """\
from examples.chat.service import ChatService


def services():
    return [ChatService()]
"""
_SERVING = re.compile(r"^flare: serving (\S+) on port (\d+)")
_METRICS = re.compile(r"^flare: metrics on port (\d+)")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """os.environ without FLARE_* variables, with the repository on PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLARE_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "generated"), str(ROOT)])
    env.update(extra or {})
    return env


class Operated:
    """A running ``flare serve`` (see the module docstring)."""

    def __init__(self, process: subprocess.Popen[str], stderr: IO[bytes]) -> None:
        self.process = process
        self.ports: dict[str, int] = {}
        self.metrics_port = 0
        self.stdout_lines: list[str] = []
        self._stderr = stderr

    def stderr_text(self) -> str:
        """What the server wrote to stderr so far (its log)."""
        self._stderr.seek(0)
        return self._stderr.read().decode("utf-8", "replace")

    def get(self, path: str, port: int | None = None) -> tuple[int, str]:
        """GET `path` from the metrics endpoint: (status, body)."""
        connection = http.client.HTTPConnection("127.0.0.1", port or self.metrics_port, timeout=10)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            return response.status, response.read().decode("utf-8")
        finally:
            connection.close()

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    @classmethod
    @contextlib.contextmanager
    def start(
        cls,
        directory: Path,
        config: str,
        *args: str,
        env: Mapping[str, str] = {},
        expect: tuple[str, ...] = ("websocket",),
        metrics: bool = True,
        timeout: float = 60.0,
    ) -> Iterator[Operated]:
        """Run ``flare serve ARGS`` in `directory` with `config` as its flare.toml."""
        (directory / "flare.toml").write_text(config, encoding="utf-8")
        (directory / "opsapp.py").write_text(APP, encoding="utf-8")
        with tempfile.TemporaryFile() as stderr:
            process = subprocess.Popen(
                [FLARE, "serve", *args],
                cwd=directory,
                env=environment(env),
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )
            served = cls(process, stderr)
            try:
                served._wait_ports(set(expect), metrics, timeout)
                yield served
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait(timeout=30)
                if process.stdout is not None:
                    process.stdout.close()

    def _wait_ports(self, expect: set[str], metrics: bool, timeout: float) -> None:
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        while expect - set(self.ports) or (metrics and not self.metrics_port):
            line = self.process.stdout.readline()
            if not line or time.monotonic() > deadline:
                raise RuntimeError(f"flare serve did not start: {self.stderr_text()}")
            self.stdout_lines.append(line)
            found = _SERVING.match(line)
            if found:
                self.ports[found[1]] = int(found[2])
            found = _METRICS.match(line)
            if found:
                self.metrics_port = int(found[1])
