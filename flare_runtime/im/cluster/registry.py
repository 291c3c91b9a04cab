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

import dataclasses
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from flare_runtime.im.sessions import CloseReason, DevicePolicy, replaced_by_policy
from flare_runtime.im.storage.postgres import PostgresStorage, create_schema

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
        async with self._storage.pool.acquire() as connection:
            status = await connection.execute(
                self._sql("UPDATE {schema}.nodes SET seen_at = now() WHERE node_id = $1"),
                self.node_id,
            )
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
        user = session.user_id
        async with self._storage.pool.acquire() as connection, connection.transaction():
            await self._lock_user(connection, user)
            rows = await connection.fetch(
                self._sql(
                    f"SELECT {_SESSION_COLUMNS} FROM {{schema}}.sessions "
                    "WHERE user_id = $1 AND ended_reason IS NULL ORDER BY opened"
                ),
                user,
            )
            existing = [_session(row) for row in rows if row["session_id"] != retire]
            replaced = replaced_by_policy(
                policy, existing, session.device_id, session.platform, max_sessions
            )
            detail = f"replaced by a newer session of device {session.device_id!r}"
            if replaced:
                await connection.execute(
                    self._sql(
                        "UPDATE {schema}.sessions SET ended_reason = $2, ended_detail = $3, "
                        "replaced_by = $4 WHERE session_id = ANY($1::text[])"
                    ),
                    [old.session_id for old in replaced],
                    int(CloseReason.REPLACED),
                    detail,
                    session.session_id,
                )
            await connection.execute(
                self._sql(
                    "INSERT INTO {schema}.sessions "
                    "(session_id, user_id, device_id, platform, node_id) "
                    "VALUES ($1, $2, $3, $4, $5)"
                ),
                session.session_id,
                user,
                session.device_id,
                session.platform,
                self.node_id,
            )
            was_online = await connection.fetchval(
                self._sql("SELECT online FROM {schema}.presence WHERE user_id = $1"), user
            )
            changed_at_ms = await connection.fetchval(
                self._sql(
                    "INSERT INTO {schema}.presence (user_id, online, idle_since) "
                    "VALUES ($1, true, NULL) ON CONFLICT (user_id) DO UPDATE SET online = true, "
                    "idle_since = NULL, changed_at = CASE WHEN {schema}.presence.online "
                    f"THEN {{schema}}.presence.changed_at ELSE now() END RETURNING {_MS}"
                ),
                user,
            )
        ended = [
            dataclasses.replace(
                old, ended=CloseReason.REPLACED, detail=detail, replaced_by=session.session_id
            )
            for old in replaced
        ]
        return Registered(ended, came_online=not was_online, changed_at_ms=changed_at_ms)

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
