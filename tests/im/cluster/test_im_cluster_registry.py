"""The session registry, node leases and presence in PostgreSQL (`ClusterRegistry`)."""

from __future__ import annotations

import asyncio
import random

import pytest

from flare_runtime.im.cluster.registry import ClusterRegistry, RegisteredSession
from flare_runtime.im.sessions import CloseReason, DevicePolicy, replaced_by_policy
from flare_runtime.im.storage import KeyRing
from flare_runtime.im.storage.postgres import PostgresStorage
from flare_runtime.testing.im_cluster import POSTGRES_DSN

TIMEOUT = 1.0
LEASE = 0.2


async def registry(storage: PostgresStorage, node_id: str) -> ClusterRegistry:
    opened = ClusterRegistry(storage, node_id, lease_interval=LEASE, node_timeout=TIMEOUT)
    await opened.open()
    return opened


def row(session_id: str, user: str, device: str, node: str, platform: int = 1) -> RegisteredSession:
    return RegisteredSession(session_id, user, device, platform, node)


async def test_a_login_replaces_by_policy_across_nodes_and_reports_presence(
    storage: PostgresStorage,
) -> None:
    a, b = await registry(storage, "a"), await registry(storage, "b")
    first = await a.register(row("s1", "alice", "phone", "a"), DevicePolicy.ALLOW_ALL, 32)
    assert first.replaced == [] and first.came_online
    other = await a.register(row("s2", "alice", "laptop", "a", 2), DevicePolicy.ALLOW_ALL, 32)
    assert other.replaced == [] and not other.came_online
    second = await b.register(row("s3", "alice", "phone", "b"), DevicePolicy.ALLOW_ALL, 32)
    (replaced,) = second.replaced
    assert (replaced.session_id, replaced.node_id, replaced.ended) == (
        "s1",
        "a",
        CloseReason.REPLACED,
    )
    assert replaced.replaced_by == "s3"
    assert [s.session_id for s in await b.sessions_of("alice")] == ["s2", "s3"]
    ended = (await a.sessions(["s1"]))["s1"]
    assert ended.ended is CloseReason.REPLACED  # until its node closes it
    assert (await a.unregister("s1")) is not None and await a.sessions(["s1"]) == {}
    total = await b.register(row("s4", "alice", "tv", "b"), DevicePolicy.ONE_IN_TOTAL, 32)
    assert {s.session_id for s in total.replaced} == {"s2", "s3"}


async def test_racing_logins_of_one_device_keep_exactly_one(storage: PostgresStorage) -> None:
    nodes = [await registry(storage, f"n{i}") for i in range(4)]
    results = await asyncio.gather(
        *(
            node.register(row(f"s{i}", "alice", "phone", node.node_id), DevicePolicy.ALLOW_ALL, 32)
            for i, node in enumerate(nodes)
        )
    )
    assert len(await nodes[0].sessions_of("alice")) == 1
    assert sum(len(result.replaced) for result in results) == 3
    assert sum(result.came_online for result in results) == 1


async def test_the_registry_applies_the_device_policy_of_one_process(
    storage: PostgresStorage,
) -> None:
    """`register` applies the policy in SQL; it must replace exactly what
    `replaced_by_policy` (the one-process rule) replaces, for every policy and limit."""
    node = await registry(storage, "n")
    draw = random.Random(14)
    for case in range(300):
        user = f"u{case}"
        existing = [
            row(f"{user}-{n}", user, draw.choice("abcd"), "n", draw.randint(1, 3))
            for n in range(draw.randint(0, 6))
        ]
        async with storage.pool.acquire() as connection:
            for session in existing:  # as they are, whatever the policy would have said
                await connection.execute(
                    f"INSERT INTO {storage.schema}.sessions "
                    "(session_id, user_id, device_id, platform, node_id) "
                    "VALUES ($1, $2, $3, $4, 'n')",
                    session.session_id,
                    user,
                    session.device_id,
                    session.platform,
                )
        policy = draw.choice(list(DevicePolicy))
        maximum = draw.randint(1, 4)
        retire = draw.choice([*existing, None])
        login = row(f"{user}-new", user, draw.choice("abcd"), "n", draw.randint(1, 3))
        kept = [s for s in existing if s is not retire]
        expected = replaced_by_policy(policy, kept, login.device_id, login.platform, maximum)
        registered = await node.register(
            login, policy, maximum, retire=retire.session_id if retire is not None else ""
        )
        assert {s.session_id for s in registered.replaced} == {s.session_id for s in expected}, (
            case,
            policy,
            maximum,
            existing,
            login,
        )
        live = {s.session_id for s in await node.sessions_of(user)}
        assert live == {s.session_id for s in existing} - {s.session_id for s in expected} | {
            login.session_id
        }


async def test_a_renewal_does_not_wait_behind_a_busy_pool(storage: PostgresStorage) -> None:
    """Every pool connection busy (a login storm): the lease is renewed all the same, in time."""
    node = await registry(storage, "n")
    held: list[object] = []
    release = asyncio.Event()

    async def hold() -> None:
        async with storage.pool.acquire() as connection:
            held.append(connection)
            await release.wait()

    holders = [asyncio.ensure_future(hold()) for _ in range(storage.pool.get_max_size())]
    try:
        while len(held) < len(holders):
            await asyncio.sleep(0.01)
        assert await asyncio.wait_for(node.renew(), TIMEOUT) is True
    finally:
        release.set()
        await asyncio.gather(*holders)
    await node.close()


async def test_a_dead_nodes_sessions_are_forgotten_and_its_users_go_offline(
    storage: PostgresStorage,
) -> None:
    alive, dead = await registry(storage, "alive"), await registry(storage, "dead")
    await dead.register(row("s1", "bob", "phone", "dead"), DevicePolicy.ALLOW_ALL, 32)
    await alive.register(row("s2", "carol", "phone", "alive"), DevicePolicy.ALLOW_ALL, 32)
    swept = await alive.sweep(grace=0.5)
    assert swept.dead_nodes == [] and swept.offline_users == []
    await asyncio.sleep(TIMEOUT + 0.1)  # `dead` never renews its lease
    assert await alive.renew()
    swept = await alive.sweep(grace=0.5)
    assert (swept.dead_nodes, swept.idle_users, swept.offline_users) == (["dead"], ["bob"], [])
    assert await alive.sessions_of("bob") == []
    assert (await alive.presence(["bob"]))["bob"][0]  # online during the grace
    await asyncio.sleep(0.6)
    (offline,) = (await alive.sweep(grace=0.5)).offline_users
    assert offline[0] == "bob"
    assert await alive.presence(["bob", "carol", "nobody"]) == {
        "bob": (False, offline[1]),
        "carol": (True, (await alive.presence(["carol"]))["carol"][1]),
        "nobody": (False, 0),
    }
    # Its lease ran out: it learns so, and comes back with no session.
    assert not await dead.renew()
    assert await dead.renew()


async def test_going_offline_waits_for_the_grace_and_a_login_cancels_it(
    storage: PostgresStorage,
) -> None:
    node = await registry(storage, "n")
    await node.register(row("s1", "bob", "phone", "n"), DevicePolicy.ALLOW_ALL, 32)
    assert await node.go_offline("bob", 0.4) == (None, None)  # has a session
    ended = await node.unregister("s1")
    assert ended is not None and ended.user_idle
    changed, left = await node.go_offline("bob", 0.4)
    assert changed is None and left is not None and 0 < left <= 0.4
    again = await node.register(row("s2", "bob", "phone", "n"), DevicePolicy.ALLOW_ALL, 32)
    assert not again.came_online  # back within the grace: no flap
    assert await node.go_offline("bob", 0.0) == (None, None)
    assert (await node.unregister("s2")) is not None
    await asyncio.sleep(0.45)
    changed, left = await node.go_offline("bob", 0.4)
    assert changed is not None and left is None
    assert await node.go_offline("bob", 0.4) == (None, None)  # made once


async def test_a_kick_marks_the_session_ended_until_its_node_closes_it(
    storage: PostgresStorage,
) -> None:
    node = await registry(storage, "n")
    await node.register(row("s1", "bob", "phone", "n"), DevicePolicy.ALLOW_ALL, 32)
    ended = await node.end("s1", CloseReason.KICKED, "bye")
    assert ended is not None and ended.user_idle and ended.session.node_id == "n"
    assert (await node.sessions(["s1"]))["s1"].ended is CloseReason.KICKED
    assert await node.end("s1", CloseReason.KICKED, "again") is None
    assert await node.sessions_of("bob") == []


async def test_sessions_of_nodes_gone_while_none_ran_are_forgotten_at_start(
    storage: PostgresStorage,
) -> None:
    old = await registry(storage, "old")
    await old.register(row("s1", "bob", "phone", "old"), DevicePolicy.ALLOW_ALL, 32)
    async with storage.pool.acquire() as connection:
        await connection.execute(f"DELETE FROM {storage.schema}.nodes")
    new = await registry(storage, "new")
    assert await new.sessions_of("bob") == []


def test_the_lease_must_fit_in_the_timeout() -> None:
    storage = PostgresStorage(POSTGRES_DSN, KeyRing.generate())
    with pytest.raises(ValueError, match="two lease intervals"):
        ClusterRegistry(storage, "n", lease_interval=1.0, node_timeout=2.0)
