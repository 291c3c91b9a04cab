"""The cluster-wide session registry: which node holds which session, and who is online.

It lives in PostgreSQL, beside the IM's data (the storage's schema: tables
``nodes``, ``sessions`` and ``presence``), rather than in Redis, because:

* the multi-device policy must be decided once for the user's sessions on
  every node: a login takes the user's advisory lock, reads the user's
  sessions, marks those the policy replaces as ended and inserts the new one,
  in one transaction, so two logins racing on two nodes cannot both keep
  their device;
* it must outlive the broker: Redis holds nothing (a restart empties it), and
  logins, kicks and presence keep working while it is down;
* every time it keeps (leases, the presence grace period) is the database's
  ``now()``: one clock for every host.

**Node leases.** Each node renews its row in ``nodes`` every
`ClusterRegistry.lease_interval`; any node's `sweep` deletes the nodes not
renewed for `node_timeout` together with their sessions (a SIGKILLed node's
sessions are forgotten within ``node_timeout + lease_interval``), and their
users without another session start their grace period. A node that finds
its own lease gone (it was cut off from the database for longer than the
timeout) learns it from `renew` and must end its local sessions, whose rows
are gone.

**Presence.** ``presence.online`` is the user's state as every node reports
it; ``idle_since`` is when its last session ended. A user goes offline once it
has been idle for the grace period: the node whose session ended last checks
then (`go_offline`), and every node's `sweep` catches those whose checker
died. Each transition is made by one ``UPDATE`` and returned to the one
caller that made it, which announces it.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flare_runtime.im.sessions import CloseReason, DevicePolicy
from flare_runtime.im.storage.postgres import PostgresStorage, create_schema

if TYPE_CHECKING:
    import asyncpg

_SCHEMA = """
CREATE TABLE IF NOT EXISTS {schema}.nodes (
    node_id TEXT PRIMARY KEY,
    seen_at TIMESTAMPTZ NOT NULL
);
CREATE TABLE IF NOT EXISTS {schema}.sessions (
    session_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    platform INTEGER NOT NULL,
    node_id TEXT NOT NULL,
    opened BIGSERIAL,
    ended_reason SMALLINT,
    ended_detail TEXT NOT NULL DEFAULT '',
    replaced_by TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS sessions_by_user ON {schema}.sessions (user_id, opened);
CREATE INDEX IF NOT EXISTS sessions_by_node ON {schema}.sessions (node_id);
CREATE TABLE IF NOT EXISTS {schema}.presence (
    user_id TEXT PRIMARY KEY,
    online BOOLEAN NOT NULL,
    idle_since TIMESTAMPTZ,
    changed_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS presence_idle ON {schema}.presence (idle_since)
    WHERE idle_since IS NOT NULL;
"""

_REGISTER = """
CREATE OR REPLACE FUNCTION {schema}.register_session(
    new_session TEXT, new_user TEXT, new_device TEXT, new_platform INTEGER, new_node TEXT,
    lock_space INTEGER, policy TEXT, max_sessions INTEGER, retire TEXT, detail TEXT,
    OUT replaced_ids TEXT[], OUT replaced_nodes TEXT[], OUT replaced_devices TEXT[],
    OUT replaced_platforms INTEGER[], OUT was_online BOOLEAN, OUT changed_at_ms BIGINT)
LANGUAGE plpgsql AS $body$
BEGIN
    -- Each statement below reads a snapshot taken after the previous one
    -- (READ COMMITTED): every login of the user committed before the lock is seen.
    PERFORM pg_advisory_xact_lock(lock_space, hashtext(new_user));
    WITH live AS (
        SELECT s.session_id, s.device_id, s.platform, s.opened
        FROM {schema}.sessions s
        WHERE s.user_id = new_user AND s.ended_reason IS NULL AND s.session_id <> retire
    ), others AS (  -- allow_all: other devices, oldest first, beyond max_sessions
        SELECT l.session_id, row_number() OVER (ORDER BY l.opened) AS n, count(*) OVER () AS c
        FROM live l WHERE policy = 'allow_all' AND l.device_id <> new_device
    ), chosen AS (
        SELECT l.session_id FROM live l
        WHERE policy = 'one_in_total'
           OR (policy = 'one_per_platform'
               AND (l.platform = new_platform OR l.device_id = new_device))
           OR (policy = 'allow_all' AND l.device_id = new_device)
        UNION ALL
        SELECT o.session_id FROM others o WHERE o.n <= o.c + 1 - max_sessions
    ), ended AS (
        UPDATE {schema}.sessions s
        SET ended_reason = 1, ended_detail = detail, replaced_by = new_session  -- 1: REPLACED
        FROM chosen c WHERE s.session_id = c.session_id
        RETURNING s.session_id, s.node_id, s.device_id, s.platform, s.opened
    )
    SELECT coalesce(array_agg(e.session_id ORDER BY e.opened), '{}'),
           coalesce(array_agg(e.node_id ORDER BY e.opened), '{}'),
           coalesce(array_agg(e.device_id ORDER BY e.opened), '{}'),
           coalesce(array_agg(e.platform ORDER BY e.opened), '{}')
    INTO replaced_ids, replaced_nodes, replaced_devices, replaced_platforms
    FROM ended e;
    INSERT INTO {schema}.sessions (session_id, user_id, device_id, platform, node_id)
    VALUES (new_session, new_user, new_device, new_platform, new_node);
    SELECT p.online INTO was_online FROM {schema}.presence p WHERE p.user_id = new_user;
    INSERT INTO {schema}.presence AS p (user_id, online, idle_since) VALUES (new_user, true, NULL)
    ON CONFLICT (user_id) DO UPDATE SET online = true, idle_since = NULL,
        changed_at = CASE WHEN p.online THEN p.changed_at ELSE now() END
    RETURNING (EXTRACT(EPOCH FROM p.changed_at) * 1000)::bigint INTO changed_at_ms;
END
$body$;
"""
"""One login in one round trip to the database (`ClusterRegistry.register`).

The device policy is `flare_runtime.im.sessions.replaced_by_policy`, written
in SQL so that it is applied under the user's lock, in the same statement
that ends the sessions it replaces
(tests/im/cluster/test_im_cluster_registry.py checks both agree). A change to
the function's body or signature gets a new name: nodes of both versions may
share a schema for a while."""

_REGISTER_SIGNATURE = (
    "register_session(text, text, text, integer, text, integer, text, integer, text, text)"
)

_MS = "(EXTRACT(EPOCH FROM changed_at) * 1000)::bigint"

_SESSION_COLUMNS = (
    "session_id, user_id, device_id, platform, node_id, ended_reason, ended_detail, replaced_by"
)


@dataclass(frozen=True, slots=True)
class RegisteredSession:
    """A session as the registry knows it."""

    session_id: str
    user_id: str
    device_id: str
    platform: int
    node_id: str
    ended: CloseReason | None = None
    """Why it was ended elsewhere (its node has yet to close it); None while it lives."""
    detail: str = ""
    replaced_by: str = ""


def _session(row: Any) -> RegisteredSession:
    reason = row["ended_reason"]
    return RegisteredSession(
        session_id=row["session_id"],
        user_id=row["user_id"],
        device_id=row["device_id"],
        platform=row["platform"],
        node_id=row["node_id"],
        ended=CloseReason(reason) if reason is not None else None,
        detail=row["ended_detail"],
        replaced_by=row["replaced_by"],
    )


@dataclass(frozen=True, slots=True)
class Registered:
    """What a login changed: the sessions it replaced (on any node), and presence."""

    replaced: list[RegisteredSession]
    came_online: bool
    """The user was offline before this login (announce it)."""
    changed_at_ms: int
    """When the user's presence last changed (database time, ms since the Unix epoch)."""


@dataclass(frozen=True, slots=True)
class Ended:
    """A session that left the registry, and whether its user has none left."""

    session: RegisteredSession
    user_idle: bool
    """The user's last session ended: its grace period starts now."""


@dataclass(frozen=True, slots=True)
class Swept:
    """What one `sweep` changed."""

    dead_nodes: list[str]
    idle_users: list[str]
    """Users of the dead nodes left without a session (their grace period started)."""
    offline_users: list[tuple[str, int]]
    """Users whose grace period ran out, and when (announce them offline)."""


class ClusterRegistry:
    """The session registry and presence of a cluster, in the IM storage's PostgreSQL schema.

    One per node: `open` registers the node, `renew` keeps it alive, `close`
    forgets it with its sessions.
    """

    def __init__(
        self,
        storage: PostgresStorage,
        node_id: str,
        *,
        lease_interval: float = 1.0,
        node_timeout: float = 5.0,
    ) -> None:
        if not 0 < 2 * lease_interval < node_timeout:
            raise ValueError("node_timeout must exceed two lease intervals")
        self._storage = storage
        self.node_id = node_id
        self.lease_interval = lease_interval
        self.node_timeout = node_timeout
        schema = storage.schema
        self._sql_schema = schema
        # The first key of every per-user advisory lock: one lock space per schema.
        self._lock_space = zlib.crc32(schema.encode()) & 0x7FFFFFFF
        self._lease: asyncpg.Connection | None = None
        """`renew`'s own connection: a renewal never waits behind the pool's queue of logins
        (a login storm would otherwise outlast `node_timeout`, and the other nodes would
        forget this one)."""

    def _sql(self, text: str) -> str:
        return text.replace("{schema}", self._sql_schema)

    async def _lock_user(self, connection: Any, user_id: str) -> None:
        await connection.execute(
            "SELECT pg_advisory_xact_lock($1, hashtext($2))", self._lock_space, user_id
        )

    async def _lock_users(self, connection: Any, user_ids: Sequence[str]) -> None:
        # One order for every transaction that takes several: no deadlock.
        await connection.execute(
            "SELECT pg_advisory_xact_lock($1, key) FROM "
            "(SELECT DISTINCT hashtext(u) AS key FROM unnest($2::text[]) u ORDER BY 1) keys",
            self._lock_space,
            list(user_ids),
        )

    # -- lifecycle ---------------------------------------------------------------------

    async def open(self) -> None:
        """Create the tables when missing, forget orphaned sessions, register this node."""
        async with self._storage.pool.acquire() as connection:
            await create_schema(connection, self._sql(_SCHEMA), self._sql_schema, 7101)
            function = f"{self._sql_schema}.{_REGISTER_SIGNATURE}"
            if await connection.fetchval("SELECT to_regprocedure($1)", function) is None:
                async with connection.transaction():  # nodes starting together: one creates it
                    await connection.execute("SELECT pg_advisory_xact_lock(7101)")
                    await connection.execute(self._sql(_REGISTER))
        async with self._storage.pool.acquire() as connection:
            await connection.execute(
                self._sql(
                    "INSERT INTO {schema}.nodes (node_id, seen_at) VALUES ($1, now()) "
                    "ON CONFLICT (node_id) DO UPDATE SET seen_at = now()"
                ),
                self.node_id,
            )
            # Sessions of nodes no longer listed (every node was down at once):
            # once at start, since it scans the table.
            orphans = await connection.fetch(
                self._sql(
                    "SELECT DISTINCT node_id FROM {schema}.sessions s WHERE NOT EXISTS "
                    "(SELECT 1 FROM {schema}.nodes n WHERE n.node_id = s.node_id)"
                )
            )
        if orphans:
            async with self._storage.pool.acquire() as connection, connection.transaction():
                await self._forget_nodes(connection, [row["node_id"] for row in orphans])

    async def close(self) -> list[str]:
        """Forget this node and its sessions; returns the users left idle (graceful stop)."""
        lease, self._lease = self._lease, None
        if lease is not None:
            lease.terminate()  # no transaction open on it: nothing to finish
        async with self._storage.pool.acquire() as connection, connection.transaction():
            idle = await self._forget_nodes(connection, [self.node_id])
            await connection.execute(
                self._sql("DELETE FROM {schema}.nodes WHERE node_id = $1"), self.node_id
            )
        return idle

    async def renew(self) -> bool:
        """Renew this node's lease; False when it had expired (its sessions were forgotten).

        After False the node is registered again, with no session: end every
        local session (their rows are gone, and their users may have been
        announced offline).
        """
        if self._lease is None or self._lease.is_closed():
            self._lease = await self._storage.connect(timeout=self.node_timeout)
        try:
            status = await self._lease.execute(
                self._sql("UPDATE {schema}.nodes SET seen_at = now() WHERE node_id = $1"),
                self.node_id,
                timeout=self.node_timeout,
            )
        except BaseException:
            lease, self._lease = self._lease, None
            lease.terminate()  # in an unknown state: the next renewal connects again
            raise
        if status != "UPDATE 0":
            return True
        async with self._storage.pool.acquire() as connection, connection.transaction():
            await self._forget_nodes(connection, [self.node_id])
            await connection.execute(
                self._sql(
                    "INSERT INTO {schema}.nodes (node_id, seen_at) VALUES ($1, now()) "
                    "ON CONFLICT (node_id) DO UPDATE SET seen_at = now()"
                ),
                self.node_id,
            )
        return False

    async def _forget_nodes(self, connection: Any, node_ids: Sequence[str]) -> list[str]:
        """Delete the nodes' sessions (in a transaction); returns the users left idle."""
        users = [
            row["user_id"]
            for row in await connection.fetch(
                self._sql(
                    "SELECT DISTINCT user_id FROM {schema}.sessions WHERE node_id = ANY($1::text[])"
                ),
                list(node_ids),
            )
        ]
        if not users:
            return []
        await self._lock_users(connection, users)
        await connection.execute(
            self._sql("DELETE FROM {schema}.sessions WHERE node_id = ANY($1::text[])"),
            list(node_ids),
        )
        rows = await connection.fetch(
            self._sql(
                "UPDATE {schema}.presence p SET idle_since = now() "
                "WHERE p.user_id = ANY($1::text[]) AND p.online AND p.idle_since IS NULL "
                "AND NOT EXISTS (SELECT 1 FROM {schema}.sessions s "
                "WHERE s.user_id = p.user_id AND s.ended_reason IS NULL) RETURNING p.user_id"
            ),
            users,
        )
        return [row["user_id"] for row in rows]

    # -- sessions ----------------------------------------------------------------------

    async def register(
        self,
        session: RegisteredSession,
        policy: DevicePolicy,
        max_sessions: int,
        *,
        retire: str = "",
    ) -> Registered:
        """Add `session` (held by this node) and end those the policy replaces, atomically.

        `retire` names the session this login supersedes on the same
        connection: the policy does not count it (the caller unregisters it).
        """
        detail = f"replaced by a newer session of device {session.device_id!r}"
        async with self._storage.pool.acquire() as connection:
            row = await connection.fetchrow(
                self._sql(
                    "SELECT * FROM {schema}.register_session"
                    "($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
                ),
                session.session_id,
                session.user_id,
                session.device_id,
                session.platform,
                self.node_id,
                self._lock_space,
                policy.value,
                max_sessions,
                retire,
                detail,
            )
        assert row is not None  # a function's call returns one row
        ended = [
            RegisteredSession(
                session_id,
                session.user_id,
                device_id,
                platform,
                node_id,
                ended=CloseReason.REPLACED,
                detail=detail,
                replaced_by=session.session_id,
            )
            for session_id, node_id, device_id, platform in zip(
                row["replaced_ids"],
                row["replaced_nodes"],
                row["replaced_devices"],
                row["replaced_platforms"],
                strict=True,
            )
        ]
        return Registered(
            ended, came_online=not row["was_online"], changed_at_ms=row["changed_at_ms"]
        )

    async def unregister(self, session_id: str) -> Ended | None:
        """Remove a session that ended on this node; None when it was not registered."""
        return await self._remove(session_id, None, "")

    async def end(self, session_id: str, reason: CloseReason, detail: str) -> Ended | None:
        """Mark a session of any node ended (a kick); None when there is no such live session.

        Its node closes it when told, and then unregisters it.
        """
        return await self._remove(session_id, reason, detail)

    async def _remove(
        self, session_id: str, reason: CloseReason | None, detail: str
    ) -> Ended | None:
        async with self._storage.pool.acquire() as connection, connection.transaction():
            user = await connection.fetchval(
                self._sql("SELECT user_id FROM {schema}.sessions WHERE session_id = $1"),
                session_id,
            )
            if user is None:
                return None
            await self._lock_user(connection, user)
            if reason is None:
                row = await connection.fetchrow(
                    self._sql(
                        "DELETE FROM {schema}.sessions WHERE session_id = $1 "
                        f"RETURNING {_SESSION_COLUMNS}"
                    ),
                    session_id,
                )
            else:
                row = await connection.fetchrow(
                    self._sql(
                        "UPDATE {schema}.sessions SET ended_reason = $2, ended_detail = $3 "
                        "WHERE session_id = $1 AND ended_reason IS NULL "
                        f"RETURNING {_SESSION_COLUMNS}"
                    ),
                    session_id,
                    int(reason),
                    detail,
                )
            if row is None:
                return None
            status = await connection.execute(
                self._sql(
                    "UPDATE {schema}.presence SET idle_since = now() "
                    "WHERE user_id = $1 AND online AND idle_since IS NULL AND NOT EXISTS "
                    "(SELECT 1 FROM {schema}.sessions WHERE user_id = $1 "
                    "AND ended_reason IS NULL)"
                ),
                user,
            )
        return Ended(_session(row), user_idle=status == "UPDATE 1")

    async def sessions(self, session_ids: Sequence[str]) -> dict[str, RegisteredSession]:
        """The registry's rows of these sessions (a missing one was forgotten)."""
        async with self._storage.pool.acquire() as connection:
            rows = await connection.fetch(
                self._sql(
                    f"SELECT {_SESSION_COLUMNS} FROM {{schema}}.sessions "
                    "WHERE session_id = ANY($1::text[])"
                ),
                list(session_ids),
            )
        return {row["session_id"]: _session(row) for row in rows}

    async def sessions_of(self, user_id: str) -> list[RegisteredSession]:
        """The user's live sessions on every node, oldest first."""
        async with self._storage.pool.acquire() as connection:
            rows = await connection.fetch(
                self._sql(
                    f"SELECT {_SESSION_COLUMNS} FROM {{schema}}.sessions "
                    "WHERE user_id = $1 AND ended_reason IS NULL ORDER BY opened"
                ),
                user_id,
            )
        return [_session(row) for row in rows]

    async def live_devices(self, user_ids: Sequence[str]) -> dict[str, list[tuple[str, int]]]:
        """The (device id, platform) of each user's live sessions on every node; users
        without one are absent (who offline push notifies, `flare_runtime.im.push`)."""
        found: dict[str, list[tuple[str, int]]] = {}
        async with self._storage.pool.acquire() as connection:
            rows = await connection.fetch(
                self._sql(
                    "SELECT user_id, device_id, platform FROM {schema}.sessions "
                    "WHERE user_id = ANY($1::text[]) AND ended_reason IS NULL"
                ),
                list(user_ids),
            )
        for row in rows:
            found.setdefault(row["user_id"], []).append((row["device_id"], row["platform"]))
        return found

    # -- presence ----------------------------------------------------------------------

    async def presence(self, user_ids: Sequence[str]) -> dict[str, tuple[bool, int]]:
        """Each user's presence now and when it last changed (ms; 0: never seen)."""
        found = {user: (False, 0) for user in user_ids}
        async with self._storage.pool.acquire() as connection:
            rows = await connection.fetch(
                self._sql(
                    f"SELECT user_id, online, {_MS} AS changed_at_ms FROM {{schema}}.presence "
                    "WHERE user_id = ANY($1::text[])"
                ),
                list(found),
            )
        for row in rows:
            found[row["user_id"]] = (row["online"], row["changed_at_ms"])
        return found

    async def go_offline(self, user_id: str, grace: float) -> tuple[int | None, float | None]:
        """Take the user offline if it has been idle for `grace` seconds.

        Returns ``(changed_at_ms, None)`` when this call took it offline
        (announce it), ``(None, seconds_left)`` while it is idle within the
        grace, ``(None, None)`` otherwise (a session came back, or another
        node took it offline).
        """
        async with self._storage.pool.acquire() as connection:
            changed = await connection.fetchval(
                self._sql(
                    "UPDATE {schema}.presence SET online = false, idle_since = NULL, "
                    "changed_at = now() WHERE user_id = $1 AND online "
                    f"AND idle_since <= now() - make_interval(secs => $2) RETURNING {_MS}"
                ),
                user_id,
                grace,
            )
            if changed is not None:
                return changed, None
            left = await connection.fetchval(
                self._sql(
                    "SELECT EXTRACT(EPOCH FROM idle_since + make_interval(secs => $2) - now()) "
                    "FROM {schema}.presence WHERE user_id = $1 AND online "
                    "AND idle_since IS NOT NULL"
                ),
                user_id,
                grace,
            )
        return None, None if left is None else max(0.001, float(left))

    async def sweep(self, grace: float) -> Swept:
        """Forget nodes whose lease ran out, and take users idle past `grace` offline.

        Safe to run on every node at once: each change is made, and returned, once.
        """
        async with self._storage.pool.acquire() as connection:
            async with connection.transaction():
                dead = [
                    row["node_id"]
                    for row in await connection.fetch(
                        self._sql(
                            "DELETE FROM {schema}.nodes "
                            "WHERE seen_at < now() - make_interval(secs => $1) RETURNING node_id"
                        ),
                        self.node_timeout,
                    )
                ]
                idle = await self._forget_nodes(connection, dead) if dead else []
            # Only the row's own columns decide: a login that set idle_since
            # to NULL meanwhile makes PostgreSQL skip the row on re-check.
            offline = [
                (row["user_id"], row["changed_at_ms"])
                for row in await connection.fetch(
                    self._sql(
                        "UPDATE {schema}.presence SET online = false, idle_since = NULL, "
                        "changed_at = now() "
                        "WHERE online AND idle_since <= now() - make_interval(secs => $1) "
                        f"RETURNING user_id, {_MS} AS changed_at_ms"
                    ),
                    grace,
                )
            ]
        return Swept(dead, idle, offline)
