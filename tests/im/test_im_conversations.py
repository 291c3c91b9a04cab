"""Conversations: unguessable ids, no existence oracle, request limits, the room cache, paging."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path

import pytest
from flare.im.v1 import content_pb2

from flare_runtime.errors import RpcError
from flare_runtime.im.core import ImCore, ImLimits, Session
from flare_runtime.im.sinks import QueueSink
from flare_runtime.im.storage import KeyRing, Role, SqliteStorage
from flare_runtime.status import StatusCode


async def open_core(path: Path, **limits: float) -> ImCore:
    core = ImCore(
        SqliteStorage(path / "im.db", KeyRing.generate()),
        limits=ImLimits(**limits),  # type: ignore[arg-type]
    )
    await core.start()
    return core


@pytest.fixture
async def core(tmp_path: Path) -> AsyncIterator[ImCore]:
    started = await open_core(tmp_path, create_burst=1000, membership_burst=1000)
    yield started
    await started.close()


def login(core: ImCore, user: str) -> Session:
    return core.login(user, "d", 1, QueueSink())[0]


def text(value: str) -> bytes:
    return content_pb2.Content(text=content_pb2.TextContent(text=value)).SerializeToString()


async def failure(call: Awaitable[object]) -> tuple[StatusCode, str]:
    with pytest.raises(RpcError) as error:
        await call
    return error.value.code, error.value.message


async def test_room_ids_are_128_random_bits(core: ImCore) -> None:
    owner = login(core, "owner")
    ids = [(await core.create_room(owner, "r", [])).record.conversation_id for _ in range(50)]
    assert len(set(ids)) == 50
    for conversation_id in ids:
        prefix, token = conversation_id.split(":")
        assert prefix == "room" and len(base64.urlsafe_b64decode(token + "==")) == 16


async def test_to_a_non_member_a_conversation_answers_as_if_it_did_not_exist(
    core: ImCore,
) -> None:
    owner, stranger = login(core, "owner"), login(core, "stranger")
    closed = (await core.create_room(owner, "closed", ["friend"])).record.conversation_id
    direct = (await core.open_direct(owner, "friend")).record.conversation_id
    unknown = "room:AAAAAAAAAAAAAAAAAAAAAA"

    async def answers(conversation_id: str) -> list[tuple[StatusCode, str]]:
        return [
            await failure(core.get_conversation(stranger, conversation_id)),
            await failure(core.join_room(stranger, conversation_id)),
            await failure(core.add_members(stranger, conversation_id, ["x"])),
            await failure(core.kick_member(stranger, conversation_id, "owner")),
            await failure(core.set_member_role(stranger, conversation_id, "owner", Role.ADMIN)),
            await failure(core.send(stranger, conversation_id, "c", text("hi"))),
            await failure(core.history(stranger, conversation_id)),
            await failure(core.ack(stranger, conversation_id, 1, 1)),
            await failure(core.set_typing(stranger, conversation_id, True)),
            await failure(core.online_members(stranger, conversation_id)),
        ]

    expected = await answers(unknown)
    assert {code for code, _ in expected} == {StatusCode.NOT_FOUND}
    for conversation_id in (closed, direct):
        got = await answers(conversation_id)
        assert got == [(code, text.replace(unknown, conversation_id)) for code, text in expected]
        await core.leave_room(stranger, conversation_id)  # a no-op, as for an unknown id
    await core.leave_room(stranger, unknown)


async def test_only_an_open_room_may_be_joined_by_id(core: ImCore) -> None:
    owner, guest = login(core, "owner"), login(core, "guest")
    room = await core.create_room(owner, "open", [], open=True)
    joined = await core.join_room(guest, room.record.conversation_id)
    assert joined.members == {"owner": Role.OWNER, "guest": Role.MEMBER}


async def test_one_request_names_at_most_max_members_per_request(tmp_path: Path) -> None:
    core = await open_core(tmp_path, max_members_per_request=10)
    try:
        owner = login(core, "owner")
        many = [f"user-{index}" for index in range(11)]
        code, message = await failure(core.create_room(owner, "big", many))
        assert code is StatusCode.INVALID_ARGUMENT and "at most 10 members" in message
        room = (await core.create_room(owner, "r", many[:10])).record.conversation_id
        code, _ = await failure(core.add_members(owner, room, many))
        assert code is StatusCode.INVALID_ARGUMENT
        # Filling a room takes several requests, each bounded.
        added = await core.add_members(owner, room, [f"more-{index}" for index in range(10)])
        assert len(added.members) == 21
    finally:
        await core.close()


async def test_creating_conversations_is_rate_limited_per_user(tmp_path: Path) -> None:
    core = await open_core(tmp_path, create_rate_per_second=0.001, create_burst=3)
    try:
        alice = login(core, "alice")
        await core.create_room(alice, "one", [])
        await core.open_direct(alice, "bob")
        await core.open_direct(alice, "bob")  # it exists: nothing is created, nothing spent
        await core.create_room(alice, "two", [])
        code, message = await failure(core.create_room(alice, "three", []))
        assert code is StatusCode.RESOURCE_EXHAUSTED and "conversation creation" in message
        code, _ = await failure(core.open_direct(alice, "carol"))
        assert code is StatusCode.RESOURCE_EXHAUSTED
        await core.create_room(login(core, "bob"), "bob's", [])  # another user's own budget
    finally:
        await core.close()


async def test_membership_changes_are_rate_limited_per_user(tmp_path: Path) -> None:
    core = await open_core(tmp_path, membership_rate_per_second=0.001, membership_burst=2)
    try:
        owner = login(core, "owner")
        room = (await core.create_room(owner, "r", [])).record.conversation_id
        await core.add_members(owner, room, ["a"])
        await core.kick_member(owner, room, "a")
        code, message = await failure(core.add_members(owner, room, ["b"]))
        assert code is StatusCode.RESOURCE_EXHAUSTED and "membership change" in message
    finally:
        await core.close()


async def test_idle_rooms_leave_memory_and_come_back_as_they_were(tmp_path: Path) -> None:
    core = await open_core(tmp_path, max_cached_rooms=8, room_idle_seconds=0.0, create_burst=1000)
    try:
        owner = login(core, "owner")
        first = (await core.create_room(owner, "first", ["bob"])).record.conversation_id
        for index in range(3):
            await core.send(owner, first, f"m{index}", text("x"))
        for index in range(40):
            await core.create_room(owner, f"room {index}", [])
        assert core.state_sizes()["cached_rooms"] <= 8 + 2
        # The first room was dropped from memory; its log and members were not.
        reply = await core.send(owner, first, "after", text("y"))
        assert reply.message.seq == 4
        view = await core.get_conversation(owner, first)
        assert view.members == {"owner": Role.OWNER, "bob": Role.MEMBER}
        assert view.record.last_seq == 4
    finally:
        await core.close()


async def test_a_busy_room_is_never_dropped_from_memory(tmp_path: Path) -> None:
    core = await open_core(tmp_path, max_cached_rooms=4, room_idle_seconds=0.0)
    try:
        owner = login(core, "owner")
        busy = (await core.create_room(owner, "busy", [])).record.conversation_id
        room = core._conversations.cached(busy)
        assert room is not None
        async with room.admin_lock:  # a membership change under way
            for index in range(12):
                await core.create_room(owner, f"r{index}", [])
            assert core._conversations.cached(busy) is room
    finally:
        await core.close()


async def test_list_conversations_pages_by_id(core: ImCore) -> None:
    alice = login(core, "alice")
    created = sorted(
        [
            (await core.create_room(alice, f"r{index}", [])).record.conversation_id
            for index in range(7)
        ]
    )
    seen: list[str] = []
    after, more = "", True
    while more:
        page, more = await core.list_conversations(alice, after=after, limit=3)
        assert len(page) <= 3
        seen += [summary.membership.conversation.conversation_id for summary in page]
        after = seen[-1]
    assert seen == created
    code, _ = await failure(core.list_conversations(alice, limit=1001))
    assert code is StatusCode.INVALID_ARGUMENT
