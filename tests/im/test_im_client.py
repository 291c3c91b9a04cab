"""`ImClient` against a real server: first sync, a reconnect that syncs what was missed."""

from __future__ import annotations

from pathlib import Path

from flare.im.v1 import content_pb2, events_pb2, im_pb2

from flare_runtime.im.client import ImClient
from flare_runtime.im.core import ImCore
from flare_runtime.im.demo import DemoAuth
from flare_runtime.im.service import ImService
from flare_runtime.im.storage import KeyRing, SqliteStorage
from flare_runtime.reconnect import Backoff
from flare_runtime.server import Server
from flare_runtime.testing.cluster import eventually

FAST = Backoff(initial_delay=0.02, max_delay=0.2)


def text(body: str) -> content_pb2.Content:
    return content_pb2.Content(text=content_pb2.TextContent(text=body))


async def serve(core: ImCore) -> Server:
    server = Server([ImService(core)], auth=DemoAuth(), push_tables=[ImService.PUSH_TYPES])
    await server.start(websocket="127.0.0.1:0")
    return server


async def test_it_syncs_at_start_and_after_moving_to_another_server(tmp_path: Path) -> None:
    core = ImCore(SqliteStorage(tmp_path / "im.db", KeyRing.generate()))
    await core.start()
    first, second = await serve(core), await serve(core)
    urls = [f"ws://127.0.0.1:{s.port('websocket')}" for s in (first, second)]
    alice = ImClient(urls[1], token="alice", device_id="laptop", backoff=FAST)
    seen: list[int] = []
    events: list[events_pb2.Event] = []
    bob = ImClient(
        urls,
        token="bob",
        device_id="phone",
        backoff=FAST,
        shuffle=False,
        on_message=lambda message: seen.append(message.seq),
        on_event=events.append,
    )
    try:
        await alice.start()
        room = await alice.im.create_room(
            im_pb2.CreateRoomRequest(title="r", member_user_ids=["bob"])
        )
        await alice.send(room.conversation_id, text("before bob came"))
        await bob.start()  # the first sync brings the history
        assert seen == [1] and bob.stats.synced == 1
        await alice.send(room.conversation_id, text("live"))
        await eventually(lambda: seen == [1, 2])
        assert bob.stats.live == 1
        await first.shutdown(grace=0.1)  # Bob's server goes away; Alice goes on
        for n in range(3):
            await alice.send(room.conversation_id, text(f"while bob moves {n}"))
        await bob.synced()
        await eventually(lambda: seen == [1, 2, 3, 4, 5])
        assert bob.stats.logins == 2  # each message once, whether live, synced or both
        assert bob.channel.url == urls[1]
        # Sent through the new connection, and answered once.
        reply = await bob.send(room.conversation_id, text("back"), client_message_id="b-1")
        again = await bob.send(room.conversation_id, text("back"), client_message_id="b-1")
        assert again.duplicate and again.seq == reply.seq == 6
        await eventually(lambda: seen[-1] == 6)
        assert seen == [1, 2, 3, 4, 5, 6]
        assert [e.WhichOneof("event") for e in events] == []  # messages go to on_message
    finally:
        await alice.close()
        await bob.close()
        await second.shutdown(grace=0.1)
        await core.close()


async def test_a_replaced_session_is_not_resumed(tmp_path: Path) -> None:
    core = ImCore(SqliteStorage(tmp_path / "im.db", KeyRing.generate()))
    await core.start()
    server = await serve(core)
    url = f"ws://127.0.0.1:{server.port('websocket')}"
    old = ImClient(url, token="alice", device_id="phone", backoff=FAST)
    new = ImClient(url, token="alice", device_id="phone", backoff=FAST)
    try:
        await old.start()
        await new.start()
        await eventually(lambda: old.ended is not None)
        assert old.ended is not None
        assert old.ended.reason == events_pb2.SessionClosed.REASON_REPLACED
        assert old.stats.logins == 1  # it did not log in again to take the device back
        assert [s.session_id for s in core.sessions_of("alice")] == [new.session_id]
    finally:
        await old.close()
        await new.close()
        await server.shutdown(grace=0.1)
        await core.close()
