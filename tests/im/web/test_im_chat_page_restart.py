"""The chat page across a server crash: SIGKILL mid-chat, restart on the same port.

Two headless Chromium pages chat with ``python -m flare_runtime.im.demo``. The
server freezes (SIGSTOP) while both pages send, so their messages are in
flight, unanswered, when it is killed (SIGKILL: no shutdown, no flush); more
are typed while it is down, and it restarts on the same ports with the same
SQLite file. What the page promises (docs/im.md, "The browser chat page"):
every message typed on either page is stored exactly once (sends are retried
with the same client message id until acknowledged), and once both pages have
reconnected (re-Login, then Sync from their last seq) they show the same
messages, each once, in seq order, 1..N with no gap, each sender's in the order
typed, none left pending.
"""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.chromium import require_browser
from tests.im.web.conftest import ChatPage

ROOT = Path(__file__).resolve().parents[3]
TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class DemoProcess:
    """``python -m flare_runtime.im.demo`` on fixed ports, started and killed at will."""

    def __init__(self, database: Path) -> None:
        self.database = database
        self.websocket_port = free_port()
        self.http_port = free_port()
        self.process: asyncio.subprocess.Process | None = None

    @property
    def page_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/"

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "flare_runtime.im.demo",
            "--db",
            str(self.database),
            "--ws-port",
            str(self.websocket_port),
            "--http-port",
            str(self.http_port),
            cwd=ROOT,
            env={"PYTHONPATH": f"{ROOT}:{ROOT / 'generated'}", "PATH": "/usr/bin:/bin"},
            stdout=asyncio.subprocess.PIPE,
        )
        assert self.process.stdout is not None
        async with asyncio.timeout(TIMEOUT):
            line = (await self.process.stdout.readline()).decode()
        assert re.search(rf"ws://[0-9.]+:{self.websocket_port}", line), line

    def freeze(self) -> None:
        """SIGSTOP: the server holds its connections open and answers nothing."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    async def kill(self) -> None:
        """SIGKILL: a crash, nothing flushed or closed."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        await self.process.wait()

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            async with asyncio.timeout(TIMEOUT):
                await self.process.wait()


@pytest.fixture
async def demo(tmp_path: Path) -> AsyncIterator[DemoProcess]:
    require_browser()
    running = DemoProcess(tmp_path / "chat.db")
    await running.start()
    try:
        yield running
    finally:
        if running.process is not None and running.process.returncode is None:
            running.process.kill()
            await running.process.wait()


def settled(page: dict[str, Any], count: int) -> bool:
    """Connected, `count` messages shown, none pending."""
    messages = page["messages"]
    return (
        page["state"] == "ready"
        and len(messages) == count
        and not any(message["pending"] for message in messages)
    )


async def test_pages_show_every_message_once_and_in_order_across_a_server_crash(
    demo: DemoProcess, pages: tuple[ChatPage, ChatPage]
) -> None:
    alice, bob = pages
    await alice.open(demo.page_url, "alice")
    await bob.open(demo.page_url, "bob")
    typed: dict[str, list[str]] = {"alice": [], "bob": []}

    async def say(page: ChatPage, user: str, text: str) -> None:
        typed[user].append(text)
        await page.say(text)

    await say(alice, "alice", "a0 before")
    await say(bob, "bob", "b0 before")
    await alice.until(lambda page: settled(page, 2))

    # Mid-chat: both pages have sends in flight, unanswered, when the server dies.
    demo.freeze()
    for index in range(1, 4):
        await say(alice, "alice", f"a{index} in flight")
        await say(bob, "bob", f"b{index} in flight")
    await alice.until(lambda page: sum(m["pending"] for m in page["messages"]) == 3)
    await demo.kill()
    await alice.until(lambda page: page["state"] == "reconnecting")
    await bob.until(lambda page: page["state"] == "reconnecting")

    # While it is down: typed, shown as pending, not lost.
    for index in range(4, 7):
        await say(alice, "alice", f"a{index} while down")
        await say(bob, "bob", f"b{index} while down")
    shown = await alice.read()
    assert [m["text"] for m in shown["messages"] if m["pending"]][-1] == "a6 while down"

    await demo.start()  # same ports, same SQLite file
    total = len(typed["alice"]) + len(typed["bob"])
    await alice.until(lambda page: settled(page, total), timeout=60)
    await bob.until(lambda page: settled(page, total), timeout=60)
    await say(alice, "alice", "a7 after")
    total += 1
    first = await alice.until(lambda page: settled(page, total))
    second = await bob.until(lambda page: settled(page, total))

    def seen(page: dict[str, Any]) -> list[tuple[str, str, str]]:
        return [(m["seq"], m["who"], m["text"]) for m in page["messages"]]

    assert seen(first) == seen(second)
    assert [m["seq"] for m in first["messages"]] == [str(seq) for seq in range(1, total + 1)]
    assert len({m["epoch"] for m in first["messages"]}) == 1
    for user, texts in typed.items():
        assert [m["text"] for m in first["messages"] if m["who"] == user] == texts
    await demo.stop()
