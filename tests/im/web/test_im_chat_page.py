"""End to end: two headless Chromium pages sign in as two users and chat.

The page (flare_runtime/im/web/static/chat.js) is the bundle of
clients/typescript/examples/im-chat: the generated IM client over @flare/client.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from flare.im.v1 import content_pb2, events_pb2, im_pb2
from flare.im.v1.im_flare import ImServiceClient

from flare_runtime.client import connect
from flare_runtime.im.demo import LOBBY, DemoServer, start_demo
from flare_runtime.im.service import ImService
from flare_runtime.im.web.site import StaticSite
from tests.chromium import require_browser
from tests.im.web.conftest import ChatPage


@pytest.fixture
async def demo(tmp_path: Path) -> AsyncIterator[DemoServer]:
    require_browser()
    running = await start_demo(tmp_path / "chat.db")
    yield running
    await running.close()


async def send_from_python(demo: DemoServer, user: str, texts: list[str]) -> None:
    """`user` sends `texts` to the lobby with the Python client, one after another."""
    url = f"ws://127.0.0.1:{demo.server.port('websocket')}"
    batch = secrets.token_hex(4)
    channel = await connect(url, token=user, push_tables=[ImService.PUSH_TYPES])
    try:
        client = ImServiceClient(channel)
        await client.login(im_pb2.LoginRequest(device_id="python"))
        await client.join_room(im_pb2.JoinRoomRequest(conversation_id=LOBBY))
        for index, text in enumerate(texts):
            await client.send(
                im_pb2.SendRequest(
                    conversation_id=LOBBY,
                    client_message_id=f"python-{batch}-{index}",
                    content=content_pb2.Content(text=content_pb2.TextContent(text=text)),
                )
            )
    finally:
        await channel.close()


def lines(page: dict[str, object]) -> list[str]:
    messages = page["messages"]
    assert isinstance(messages, list)
    return [f"{m['who']} {m['text']}" for m in messages]


async def test_two_pages_chat_with_receipts_typing_presence_and_history(
    demo: DemoServer, pages: tuple[ChatPage, ChatPage]
) -> None:
    alice, bob = pages
    await alice.open(demo.page_url, "alice", by_form=True)
    await bob.open(demo.page_url, "bob")
    shown = await alice.read()
    assert shown["title"] == "Lobby"
    assert [c["name"] for c in shown["conversations"]] == ["# Lobby"]

    # Presence: each sees the other online.
    await alice.until(lambda page: {"alice", "bob"} <= set(page["online"]))
    await bob.until(lambda page: {"alice", "bob"} <= set(page["online"]))

    # Typing reaches the other page, and ends with the send.
    await alice.type_into("text", "hello bob")
    await bob.until(lambda page: page["typing"] == "alice typing…")
    await alice.click("send")
    await bob.until(lambda page: lines(page) == ["alice hello bob"])
    await bob.until(lambda page: page["typing"] == "")
    await bob.say("hi alice")
    expected = ["alice hello bob", "bob hi alice"]
    shown = await alice.until(lambda page: lines(page) == expected)
    assert [m["seq"] for m in shown["messages"]] == ["1", "2"]
    assert lines(await bob.read()) == expected

    # Receipts: each page reads what it shows, so each sender sees "read by 1".
    await alice.until(lambda page: page["messages"][0]["receipt"] == "read by 1")
    await bob.until(lambda page: page["messages"][1]["receipt"] == "read by 1")

    # A page loaded later gets the history.
    await bob.open(demo.page_url, "bob")
    await bob.until(lambda page: lines(page) == expected)


async def test_rooms_direct_conversations_and_unread_counts(
    demo: DemoServer, pages: tuple[ChatPage, ChatPage]
) -> None:
    alice, bob = pages
    await alice.open(demo.page_url, "alice")
    await bob.open(demo.page_url, "bob")

    # Alice creates a room with bob in it: it appears in bob's list (MembershipChanged).
    await alice.type_into("room-title", "project")
    await alice.type_into("room-members", "bob")
    await alice.click("create-room")
    await alice.until(lambda page: page["title"] == "project")
    await alice.until(lambda page: page["members"] == ["alice", "bob"])
    await bob.until(lambda page: "# project" in [c["name"] for c in page["conversations"]])

    # Messages in a conversation bob does not look at count as unread there.
    await alice.say("plan A")
    await alice.say("plan B")
    await bob.until(
        lambda page: [c["unread"] for c in page["conversations"] if c["name"] == "# project"] == [2]
    )
    # Bob's page got them (it acknowledges delivery of what it receives), unread.
    await alice.until(
        lambda page: [m["receipt"] for m in page["messages"]] == ["delivered", "delivered"]
    )
    await bob.select("# project")
    await bob.until(lambda page: lines(page) == ["alice plan A", "alice plan B"])
    await bob.until(lambda page: all(c["unread"] == 0 for c in page["conversations"]))
    # Bob's page read them: alice sees it.
    await alice.until(lambda page: page["messages"][-1]["receipt"] == "read by 1")

    # A direct conversation: bob opens it; alice learns of it from its first message.
    await bob.type_into("direct-peer", "alice")
    await bob.click("open-direct")
    await bob.until(lambda page: page["title"] == "alice")
    await bob.say("psst")
    await alice.until(
        lambda page: [c["unread"] for c in page["conversations"] if c["name"] == "@ bob"] == [1]
    )
    await alice.select("@ bob")
    await alice.until(lambda page: lines(page) == ["bob psst"])
    await bob.until(lambda page: page["messages"][0]["receipt"] == "read")
    # The lobby's history is untouched by all this.
    await alice.select("# Lobby")
    assert lines(await alice.read()) == []


async def test_presence_goes_offline_after_the_grace_period(
    demo: DemoServer, pages: tuple[ChatPage, ChatPage]
) -> None:
    alice, bob = pages
    await alice.open(demo.page_url, "alice")
    await bob.open(demo.page_url, "bob")
    await alice.until(lambda page: page["online"] == ["alice", "bob"])
    await asyncio.to_thread(bob.browser.get, "about:blank")  # bob's page closes
    await alice.until(lambda page: page["online"] == ["alice"], timeout=20)
    await alice.until(lambda page: page["members"] == ["alice", "bob"])


async def test_history_pages_back_and_a_reset_history_replaces_the_copy(
    demo: DemoServer, pages: tuple[ChatPage, ChatPage]
) -> None:
    alice, _ = pages
    texts = [f"old {index}" for index in range(1, 61)]
    await send_from_python(demo, "carol", texts)
    await alice.open(demo.page_url, "alice")
    # The newest page of history (50), then the older ones on request.
    shown = await alice.until(lambda page: len(page["messages"]) == 50)
    assert lines(shown) == [f"carol {text}" for text in texts[10:]]
    await alice.click("older")
    shown = await alice.until(lambda page: len(page["messages"]) == 60)
    assert [m["seq"] for m in shown["messages"]] == [str(seq) for seq in range(1, 61)]

    # The operator resets the lobby's history: the next message comes in a new
    # epoch, and the page drops its copy of the old one.
    await demo.core.reset_history(LOBBY)
    await send_from_python(demo, "carol", ["new epoch"])
    shown = await alice.until(lambda page: lines(page) == ["carol new epoch"])
    assert [(m["epoch"], m["seq"]) for m in shown["messages"]] == [("2", "1")]


class CuttableLink:
    """A TCP relay to the IM server that can cut every connection through it, and refuse new ones.

    The page behind it loses its connection while the server and the other page go on.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.writers: set[asyncio.StreamWriter] = set()
        self.refusing = False
        self.server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)

    def cut(self) -> None:
        self.refusing = True
        for writer in self.writers:
            writer.transport.abort()

    async def close(self) -> None:
        self.cut()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            writer.transport.abort()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        self.writers |= {writer, up_writer}

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except ConnectionError:
                pass
            finally:
                sink.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self.writers -= {writer, up_writer}


async def test_a_page_cut_off_gets_what_it_missed_by_sync_after_reconnecting(
    demo: DemoServer, pages: tuple[ChatPage, ChatPage]
) -> None:
    alice, bob = pages
    link = CuttableLink(demo.server.port("websocket"))
    await link.start()
    site = StaticSite(link.port, lobby=LOBBY)  # alice's page reaches the server through `link`
    await site.start()
    try:
        await alice.open(f"http://127.0.0.1:{site.port}/", "alice")
        await bob.open(demo.page_url, "bob")
        await alice.say("before the cut")
        await bob.until(lambda page: lines(page) == ["alice before the cut"])

        link.cut()
        await alice.until(lambda page: page["state"] == "reconnecting")
        missed = [f"missed {index}" for index in range(1, 4)]
        for text in missed:
            await bob.say(text)
        expected = ["alice before the cut", *(f"bob {text}" for text in missed)]
        await bob.until(
            lambda page: lines(page) == expected and not page["messages"][-1]["pending"]
        )
        assert lines(await alice.read()) == ["alice before the cut"]

        # Back: the resume hook logs in again and Syncs from seq 1; nothing else
        # is sent, so only the Sync can bring the missed messages.
        link.refusing = False
        shown = await alice.until(lambda page: page["state"] == "ready" and lines(page) == expected)
        assert [m["seq"] for m in shown["messages"]] == ["1", "2", "3", "4"]
    finally:
        await site.close()
        await link.close()


async def test_message_text_is_drawn_as_text_never_as_html(
    demo: DemoServer, pages: tuple[ChatPage, ChatPage]
) -> None:
    """Input: a message (and a sender name) holding HTML with a script handler.
    Promised: the page shows the characters as sent; no element is made, nothing runs."""
    alice, _ = pages
    hostile = '<img src=x onerror="window.pwned=1"><b>bold</b>'
    await send_from_python(demo, "mallory_1", [hostile])
    await alice.open(demo.page_url, "alice")
    shown = await alice.until(lambda page: len(page["messages"]) == 1)
    assert shown["messages"][0]["text"] == hostile
    created = await asyncio.to_thread(
        alice.browser.execute_script,
        'return [document.querySelectorAll("#messages img, #messages b").length, '
        "window.pwned === undefined]",
    )
    assert created == [0, True]


async def test_sync_required_makes_a_page_fetch_what_its_connection_missed(
    demo: DemoServer, pages: tuple[ChatPage, ChatPage]
) -> None:
    alice, bob = pages
    await alice.open(demo.page_url, "alice")
    await bob.open(demo.page_url, "bob")
    await alice.say("before")
    await bob.until(lambda page: lines(page) == ["alice before"])

    # Bob's connection loses its pushes while the session stays open, as when a
    # cluster node loses its broker link; the server then says SyncRequired.
    (connection,) = [
        c for c in demo.server.connections if c.principal and c.principal.subject == "bob"
    ]
    dropped: list[object] = []
    connection.push_prepared = dropped.append  # type: ignore[method-assign,assignment]
    await alice.say("missed 1")
    await alice.say("missed 2")
    await alice.until(
        lambda page: len(page["messages"]) == 3 and not page["messages"][-1]["pending"]
    )
    del connection.push_prepared  # pushes flow again
    assert dropped
    assert lines(await bob.read()) == ["alice before"]

    connection.push(events_pb2.SyncRequired(conversation_ids=[LOBBY], reason="test"))
    shown = await bob.until(
        lambda page: lines(page) == ["alice before", "alice missed 1", "alice missed 2"]
    )
    assert [m["seq"] for m in shown["messages"]] == ["1", "2", "3"]
