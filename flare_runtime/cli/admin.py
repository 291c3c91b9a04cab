"""``flare admin URL ACTION [ID]``: the admin API (``flare.admin.v1.Admin``) of a server."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from flare_runtime.cli.remote import (
    CONNECTION_HELP,
    Remote,
    UsageError,
    add_connection_arguments,
    run,
)

ACTIONS = {
    "stats": "the node's counters (connections, calls, IM)",
    "connections": "open WebSocket/QUIC connections, one per line",
    "kick": "close connection ID",
    "sessions": "IM sessions (--user: one user's), one per line",
    "kick-session": "end IM session ID",
    "drain": "drain the node (as SIGTERM: readiness false, GOAWAY, then exit)",
}
NEEDS_ID = ("kick", "kick-session")

DESCRIPTION = f"""\
Call the admin API of a server serving it ([admin] enabled = true in its
configuration, docs/operations.md). Every action needs a token with the
flare.admin scope (--token); without one the server answers UNAUTHENTICATED,
with a token lacking the scope PERMISSION_DENIED.

actions:
{chr(10).join(f"  {name:<13} {text}" for name, text in ACTIONS.items())}

--json prints the reply as JSON instead of text. With flare serve --workers N,
the worker the connection reaches answers: connections and sessions are its own,
drain drains every worker.

{CONNECTION_HELP}"""


def configure(parser: argparse.ArgumentParser) -> None:
    """Set up ``flare admin``'s arguments."""
    parser.description = DESCRIPTION
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    add_connection_arguments(parser)
    parser.add_argument("action", choices=list(ACTIONS), metavar="ACTION", help="what to do")
    parser.add_argument("id", nargs="?", metavar="ID", help="the connection or session (kick)")
    parser.add_argument("--user", metavar="USER", help="sessions: only this user's")
    parser.add_argument("--reason", metavar="TEXT", help="kick: the reason the client is told")
    parser.add_argument("--json", action="store_true", help="print the reply as JSON")
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    """Run one admin action."""
    try:
        remote = Remote.from_arguments("admin", args)
        if args.action in NEEDS_ID and not args.id:
            raise UsageError(f"{args.action} needs an ID (flare admin URL {args.action} ID)")
        if args.action not in NEEDS_ID and args.id:
            raise UsageError(f"{args.action} takes no ID")
    except UsageError as error:
        print(f"flare admin: {error}", file=sys.stderr)
        return 2

    async def body(remote: Remote) -> int:
        from flare.admin.v1 import admin_pb2  # noqa: PLC0415
        from flare.admin.v1.admin_flare import AdminClient  # noqa: PLC0415

        async with remote.connect() as channel:
            client = AdminClient(channel)
            timeout = remote.time_left()
            reply: Any
            if args.action == "stats":
                reply = await client.get_stats(admin_pb2.GetStatsRequest(), timeout=timeout)
            elif args.action == "connections":
                reply = await client.list_connections(
                    admin_pb2.ListConnectionsRequest(), timeout=timeout
                )
            elif args.action == "kick":
                reply = await client.kick_connection(
                    admin_pb2.KickConnectionRequest(connection_id=args.id, reason=args.reason),
                    timeout=timeout,
                )
            elif args.action == "sessions":
                reply = await client.list_sessions(
                    admin_pb2.ListSessionsRequest(user_id=args.user or ""), timeout=timeout
                )
            elif args.action == "kick-session":
                reply = await client.kick_session(
                    admin_pb2.KickSessionRequest(session_id=args.id, reason=args.reason),
                    timeout=timeout,
                )
            else:
                reply = await client.drain(admin_pb2.DrainRequest(), timeout=timeout)
        _print(args.action, reply, as_json=args.json)
        return 0

    return run(remote, body)


def _print(action: str, reply: Any, *, as_json: bool) -> None:
    if as_json:
        from google.protobuf import json_format  # noqa: PLC0415

        print(
            json_format.MessageToJson(reply, indent=None, always_print_fields_with_no_presence=True)
        )
        return
    if action == "stats":
        worker = "" if reply.worker < 0 else f" worker {reply.worker}"
        state = "ready" if reply.ready else "draining"
        print(f"pid {reply.pid}{worker}, {state}, up {reply.uptime_seconds:.0f} s")
        for entry in reply.transports:
            print(
                f"{entry.transport}: {entry.open} open, {entry.opened} opened, "
                f"{entry.bytes_received} bytes in, {entry.bytes_sent} out, {entry.pushes} pushes"
            )
        for route in reply.routes:
            print(
                f"{route.transport} {route.route}: {route.calls} calls, {route.errors} errors, "
                f"mean {route.mean_seconds * 1000:.3f} ms"
            )
        print(
            f"slow consumers {reply.slow_consumers}, auth failures: "
            f"{reply.connection_auth_failures} at connect, {reply.call_auth_failures} per call"
        )
        if reply.HasField("im"):
            im = reply.im
            print(
                f"im: {im.sessions} sessions, {im.sent} sent, {im.delivered} delivered, "
                f"{im.syncs} syncs, {im.slow_consumers} slow consumers"
            )
    elif action == "connections":
        for entry in reply.connections:
            print(
                f"{entry.connection_id}\t{entry.transport}\t{entry.peer}\t"
                f"{entry.principal or '-'}\t{entry.bytes_received}\t{entry.bytes_sent}"
            )
    elif action == "sessions":
        for entry in reply.sessions:
            print(f"{entry.session_id}\t{entry.user_id}\t{entry.device_id}\t{entry.platform}")
    elif action == "drain":
        print("draining")
    else:
        print("kicked")
