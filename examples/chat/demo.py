"""The Flare demo: one chat server on WebSocket, QUIC and gRPC, one client session over each.

``make demo`` runs ``python -m examples.chat.demo``. It compiles
``schemas/examples/chat/v1/chat.proto`` with Flare's code generator (into a
temporary directory, then imports that fresh code), writes a development
certificate (what ``flare cert dev`` writes) into another temporary directory,
and starts ONE example chat server on 127.0.0.1 (free ports) serving

* WebSocket (``ws://``, the Flare wire protocol),
* QUIC (``quic://``, TLS 1.3 with the dev certificate),
* gRPC (``grpc://``, HTTP/2; stock grpcio clients work too)

from one process. Then one client-session function, written once against the
generated, typed `ChatServiceClient`, runs unchanged over each URL: unary, server
stream, client stream, bidi, an auth error, and server push where the transport
has it (gRPC has no server push outside a call; the demo says so instead of
faking it). It ends with a table comparing what each transport returned and
exits 0 within a few seconds.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import io
import shutil
import ssl
import sys
import tempfile
import time
from pathlib import Path

from flare_runtime.cli import main as flare_cli

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
from flare_runtime.transports.quic_certs import write_dev_certificate  # noqa: E402

SCOPES = ("chat", "chat.write")
SESSION_TIMEOUT = 20.0
"""Seconds one session may take before the demo fails (instead of hanging)."""

STEPS = ("unary", "server stream", "client stream", "bidi", "auth error", "server push")
"""The rows of the closing table, in the order a session runs them."""


def say(step: str, who: str, what: str) -> None:
    print(f"  {step:<14} {who:<6} {what}", flush=True)


async def client_session(url: str, trust: ssl.SSLContext) -> dict[str, str]:
    """Alice and Bob chat over `url`; the same code whatever the transport.

    `trust` holds the dev certificate; transports without TLS ignore it.
    Returns one short outcome per step (`STEPS`), for the closing table.
    """
    outcome: dict[str, str] = {}
    scheme = url.partition(":")[0]
    alice_token = issue_jwt(DEMO_KEY, "alice", scopes=SCOPES)
    bob_token = issue_jwt(DEMO_KEY, "bob", scopes=SCOPES)
    async with (
        flare.connect(url, token=alice_token, push_tables=[PUSH_TYPES], ssl_context=trust) as a,
        flare.connect(url, token=bob_token, push_tables=[PUSH_TYPES], ssl_context=trust) as b,
    ):
        alice = ChatServiceClient(a)
        bob = ChatServiceClient(b)

        stamp = await alice.ping(empty_pb2.Empty())
        say("unary", "alice", f"ping -> server time {stamp.ToJsonString()}")
        # Bob's own Send comes back once the server knows his connection, so every
        # later message reaches him as a push; its seq is where his stream resumes,
        # so he misses nothing however fast Alice is.
        hello = chat_pb2.ChatMessage(room="lobby", text=f"bob here, on {scheme}")
        joined = await bob.send(
            chat_pb2.SendRequest(client_message_id=f"bob-{scheme}", message=hello), timeout=5.0
        )
        say("unary", "bob", f"sent {hello.text!r} -> seq {joined.seq}")
        subscription = bob.subscribe(chat_pb2.SubscribeRequest(room="lobby", after_seq=joined.seq))
        texts = ("hello bob!", "flare is fast")
        for number, text in enumerate(texts, start=1):
            message = chat_pb2.ChatMessage(room="lobby", text=text)
            reply = await alice.send(
                chat_pb2.SendRequest(client_message_id=f"alice-{scheme}-{number}", message=message),
                timeout=5.0,
            )
            say("unary", "alice", f"sent {text!r} -> {reply.message_id}, seq {reply.seq}")
        outcome["unary"] = "Ping + 3 Sends ok"

        streamed: list[str] = []
        async for event in subscription:
            posted = event.posted.message
            say(
                "server stream",
                "bob",
                f"#{posted.room} seq {posted.seq} <{posted.author}> {posted.text}",
            )
            streamed.append(posted.text)
            if len(streamed) == len(texts):
                break
        subscription.cancel()
        outcome["server stream"] = (
            f"{len(streamed)} messages, in order" if tuple(streamed) == texts else "WRONG"
        )

        chunks = [
            chat_pb2.UploadChunk(upload_id="cat.png", data=bytes(1024), last=i == 3)
            for i in range(4)
        ]
        upload = await alice.upload(chunks)
        say(
            "client stream",
            "alice",
            f"upload {upload.upload_id} in 4 chunks -> server stored {upload.size} bytes",
        )
        outcome["client stream"] = f"{upload.size} bytes stored"

        echoes = 0
        call = alice.chat()
        for text in ("hi bot", "how are you?"):
            await call.send(chat_pb2.ChatMessage(room="bots", text=text))
            answer = await anext(aiter(call))
            say("bidi", "alice", f"sent {text!r} <- {answer.author}: {answer.text}")
            echoes += answer.text == f"you said {text!r}"
        await call.done_writing()
        async for _ in call:
            pass
        outcome["bidi"] = f"{echoes} echoes"

        async with flare.connect(url, ssl_context=trust) as anonymous:
            try:
                await ChatServiceClient(anonymous).send(
                    chat_pb2.SendRequest(message=chat_pb2.ChatMessage(room="lobby", text="x"))
                )
                outcome["auth error"] = "NOT REFUSED"
            except flare.RpcError as error:
                say("auth error", "anon", f"send -> {error.code.name}: {error.message}")
                outcome["auth error"] = error.code.name

        try:
            pushes = b.pushes()
        except flare.ConfigurationError as error:
            # Not papered over: gRPC has no server-initiated messages outside a call.
            say("server push", "bob", f"none: {error}; gRPC has no push outside a call,")
            say("", "", "so Bob got Alice's messages on his Subscribe stream only")
            outcome["server push"] = "n/a on gRPC"
        else:
            pushed: list[str] = []
            async for push in pushes:
                assert isinstance(push, chat_pb2.MessagePosted)
                if push.message.author == "alice":
                    say(
                        "server push",
                        "bob",
                        f"MessagePosted seq {push.message.seq} {push.message.text!r}",
                    )
                    pushed.append(push.message.text)
                if len(pushed) == len(texts):
                    break
            outcome["server push"] = f"{len(pushed)} MessagePosted"
    return outcome


async def run_demo() -> None:
    started = time.perf_counter()
    files = sorted(path.name for path in GENERATED_INTO.rglob("*.py*"))
    print(f"generated {SCHEMA} -> {', '.join(files)} in {GENERATION_SECONDS * 1000:.0f} ms")
    cert_dir = Path(tempfile.mkdtemp(prefix="flare-demo-cert-"))
    atexit.register(shutil.rmtree, cert_dir, True)
    cert = write_dev_certificate(cert_dir)
    print(f"dev certificate (as `flare cert dev` writes it) -> {cert.certificate}")
    trust = ssl.create_default_context(cafile=str(cert.certificate))
    trust.minimum_version = ssl.TLSVersion.TLSv1_3

    server = make_server()
    await server.start(websocket="127.0.0.1:0", grpc="127.0.0.1:0")
    # A second start adds QUIC with the certificate; WebSocket and gRPC stay plaintext.
    tls = flare.TLSFiles(str(cert.certificate), str(cert.private_key))
    await server.start(quic="127.0.0.1:0", tls=tls)
    urls = {
        "ws": f"ws://127.0.0.1:{server.port('websocket')}",
        "quic": f"quic://127.0.0.1:{server.port('quic')}",
        "grpc": f"grpc://127.0.0.1:{server.port('grpc')}",
    }
    print("one chat server process, three transports:")
    print(f"  {urls['ws']:<26} WebSocket, Flare wire protocol v1")
    print(f"  {urls['quic']:<26} QUIC, TLS 1.3 (dev certificate)")
    print(f"  {urls['grpc']:<26} gRPC over HTTP/2 (stock grpcio clients work too)")

    outcomes: dict[str, dict[str, str]] = {}
    for name, url in urls.items():
        print(f"\n== the same client session over {url}")
        session_started = time.perf_counter()
        async with asyncio.timeout(SESSION_TIMEOUT):
            outcomes[name] = await client_session(url, trust)
        print(f"  ({(time.perf_counter() - session_started) * 1000:.0f} ms)")

    print("\nsame client code, three transports:")
    print(f"  {'':<14} " + " ".join(f"{name:<22}" for name in urls).rstrip())
    for step in STEPS:
        cells = " ".join(f"{outcomes[name][step]:<22}" for name in urls).rstrip()
        print(f"  {step:<14} {cells}")
    differing = [s for s in STEPS if len({outcomes[name][s] for name in urls}) > 1]
    print(f"  identical on all three except: {', '.join(differing) or 'nothing'}")

    await server.shutdown(grace=2.0)
    print(f"\nserver shut down gracefully; demo took {time.perf_counter() - started:.2f} s")


def main() -> int:
    asyncio.run(run_demo())
    return 0


if __name__ == "__main__":
    sys.exit(main())
