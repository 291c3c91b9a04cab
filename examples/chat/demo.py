"""The Flare demo: generate the chat schema, serve it on WebSocket, run a client session.

``make demo`` runs ``python -m examples.chat.demo``. It compiles
``schemas/examples/chat/v1/chat.proto`` with Flare's code generator (into a
temporary directory, then imports that fresh code), starts the example chat
server on 127.0.0.1 (a free port), connects two users, and shows each kind of
call -- unary, server stream, client stream, bidi -- plus a server push,
printing what happens. It exits 0 within a few seconds.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import io
import shutil
import sys
import tempfile
import time
from pathlib import Path

from flare_codegen.cli import main as flare_cli

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = "examples/chat/v1/chat.proto"


def generate() -> tuple[Path, float]:
    """Run ``flare gen`` for the chat schema into a temporary directory (put first on sys.path)."""
    out = Path(tempfile.mkdtemp(prefix="flare-demo-"))
    atexit.register(shutil.rmtree, out, True)
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        status = flare_cli(["gen", str(ROOT / "schemas"), "--only", SCHEMA, "-o", str(out)])
    if status != 0:
        raise SystemExit(f"flare gen failed with status {status}")
    sys.path.insert(0, str(out))
    return out, time.perf_counter() - started


GENERATED_INTO, GENERATION_SECONDS = generate()

from examples.chat.v1 import chat_pb2  # noqa: E402
from examples.chat.v1.chat_flare import PUSH_TYPES, ChatServiceClient  # noqa: E402
from google.protobuf import empty_pb2  # noqa: E402

import flare_runtime as flare  # noqa: E402
from examples.chat.service import DEMO_KEY, make_server  # noqa: E402
from flare_runtime.auth import issue_jwt  # noqa: E402

SCOPES = ("chat", "chat.write")


def say(who: str, what: str) -> None:
    print(f"  {who:<7} {what}", flush=True)


async def run_demo() -> None:
    started = time.perf_counter()
    files = sorted(path.name for path in GENERATED_INTO.rglob("*.py*"))
    print(f"generated {SCHEMA} -> {', '.join(files)} in {GENERATION_SECONDS * 1000:.0f} ms")
    server = make_server()
    await server.start(websocket="127.0.0.1:0")
    url = f"ws://127.0.0.1:{server.port('websocket')}"
    print(f"chat server listening on {url} (WebSocket, Flare wire protocol v1)")

    alice_token = issue_jwt(DEMO_KEY, "alice", scopes=SCOPES)
    bob_token = issue_jwt(DEMO_KEY, "bob", scopes=SCOPES)
    async with (
        flare.connect(url, token=alice_token, push_tables=[PUSH_TYPES]) as alice_channel,
        flare.connect(url, token=bob_token, push_tables=[PUSH_TYPES]) as bob_channel,
    ):
        alice = ChatServiceClient(alice_channel)
        bob = ChatServiceClient(bob_channel)

        print("\n1. unary: Ping (no auth needed)")
        stamp = await alice.ping(empty_pb2.Empty())
        say("alice", f"ping -> server time {stamp.ToJsonString()}")

        print("\n2. server stream: bob subscribes to #lobby")
        subscription = bob.subscribe(chat_pb2.SubscribeRequest(room="lobby"))
        await asyncio.sleep(0.05)  # let the subscription reach the server

        print("\n3. unary: alice sends two messages (bob gets them on his stream and as pushes)")
        for number, text in enumerate(("hello bob!", "flare is fast"), start=1):
            message = chat_pb2.ChatMessage(room="lobby", text=text)
            reply = await alice.send(
                chat_pb2.SendRequest(client_message_id=f"alice-{number}", message=message),
                timeout=2.0,
            )
            say("alice", f"sent {text!r} -> {reply.message_id}, seq {reply.seq}")
        received = 0
        async for event in subscription:
            posted = event.posted.message
            say("bob", f"stream: #{posted.room} seq {posted.seq} <{posted.author}> {posted.text}")
            received += 1
            if received == 2:
                break
        subscription.cancel()

        print("\n4. server push: MessagePosted, decoded by push type id")
        received = 0
        async for push in bob_channel.pushes():
            assert isinstance(push, chat_pb2.MessagePosted)
            say("bob", f"push:   MessagePosted seq {push.message.seq} {push.message.text!r}")
            received += 1
            if received == 2:
                break

        print("\n5. client stream: alice uploads a file in 4 chunks")
        chunks = [
            chat_pb2.UploadChunk(upload_id="cat.png", data=bytes(1024), last=i == 3)
            for i in range(4)
        ]
        upload = await alice.upload(chunks)
        say("alice", f"upload {upload.upload_id} -> server stored {upload.size} bytes")

        print("\n6. bidi stream: alice chats with the echo bot")
        call = alice.chat()
        for text in ("hi bot", "how are you?"):
            await call.send(chat_pb2.ChatMessage(room="bots", text=text))
            answer = await anext(aiter(call))
            say("alice", f"sent {text!r} <- {answer.author}: {answer.text}")
        await call.done_writing()
        async for _ in call:
            pass

        print("\n7. errors: a call without the right credentials")
        anonymous = await flare.connect(url)
        try:
            await ChatServiceClient(anonymous).send(
                chat_pb2.SendRequest(message=chat_pb2.ChatMessage(room="lobby", text="x"))
            )
        except flare.RpcError as error:
            say("anon", f"send -> {error.code.name}: {error.message}")
        finally:
            await anonymous.close()

    await server.shutdown(grace=2.0)
    print(f"\nserver shut down gracefully; demo took {time.perf_counter() - started:.2f} s")


def main() -> int:
    asyncio.run(run_demo())
    return 0


if __name__ == "__main__":
    sys.exit(main())
