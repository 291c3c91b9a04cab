"""Flare over QUIC vs raw aioquic, in the same run.

Server and client are separate processes pinned to CPU 0 and 1; 127.0.0.1
only; every process has a hard deadline. Both run on the **stdlib asyncio
loop** (aioquic's timers are erratic on uvloop's millisecond timer wheel, see
shared/baselines/README.md): QUIC figures here are asyncio figures.

The server process serves these on their own UDP ports:

* raw aioquic echo, **one long-lived stream** carrying 4-byte-length-prefixed
  frames (the strategy Flare uses),
* raw aioquic echo, **a stream per request** (the strategy Flare rejected),
* the one-stream raw echo again, both ends reading their sockets through
  Flare's `DrainingSocket` (every queued datagram per wake-up; asyncio reads
  one per loop iteration): Flare reads this way, so Flare ÷ this row is
  Flare's own overhead with the I/O batching equal, while Flare ÷ the first
  row compares against aioquic as it is usually run (shared/baselines),
* a Flare `Server` with one unary echo route (idempotent) over QUIC, with
  the default options, and a second one with ``eager_handlers=True`` (the
  default on Python 3.12+; opt-in on 3.11, see docs/runtime.md).

Measured: sequential p50/p99 and 64-in-flight throughput for each, with the CPU
each side spent per message; and time to first response on a fresh connection
(full handshake, then the call) vs a resumed connection sending the call in
0-RTT early data. Prints one JSON line and a short table with the ratios.

    .venv/bin/python -m bench.quic_bench            # ~2.5 min
    .venv/bin/python -m bench.quic_bench --quick    # ~10 s smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import struct
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.asyncio.server import QuicServer, serve
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import HandshakeCompleted, QuicEvent, StreamDataReceived
from google.protobuf.wrappers_pb2 import BytesValue

import flare_runtime
from bench import _measure
from bench._measure import (
    CLIENT_CPU,
    LOOPBACK,
    SERVER_CPU,
    Call,
    ServerProcess,
    exit_when_stdin_closes,
    pin_cpu,
    rounded,
    set_deadline,
)
from bench._service import ECHO, SERVICE, BenchService
from flare_runtime.server import Server, ServerOptions, TLSFiles
from flare_runtime.transports.quic import QuicChannel
from flare_runtime.transports.quic_certs import write_dev_certificate
from flare_runtime.transports.quic_link import DrainingSocket
from flare_runtime.transports.quic_tickets import MemoryTicketStore

RAW_ALPN = "flare-bench"
LENGTH = struct.Struct(">I")
REQUEST_ID = struct.Struct(">Q")
FILLER = bytes(range(92))  # 8-byte id + 92 bytes = a 100-byte message
PAYLOAD_SIZE = 100


SEQUENTIAL_FIGURES = (
    "p50_us",
    "p99_us",
    "client_us_per_msg",
    "server_us_per_msg",
    "datagrams_per_100_msgs",
)
"""What `measure_sequential` reports (zeros when the phase is skipped)."""


def make_payload(request_id: int) -> bytes:
    """A 100-byte message whose first 8 bytes identify it."""
    return REQUEST_ID.pack(request_id) + FILLER


def split_frames(buffer: bytearray) -> int:
    """Length of the prefix of `buffer` that holds only complete frames."""
    end = 0
    while len(buffer) - end >= 4:
        size = 4 + LENGTH.unpack_from(buffer, end)[0]
        if len(buffer) - end < size:
            break
        end += size
    return end


# ------------------------------------------------------------------ measuring


def udp_datagrams_sent() -> int:
    """UDP datagrams sent by the whole machine (both bench processes, and any neighbour)."""
    with open("/proc/net/snmp") as snmp:
        rows = [line.split() for line in snmp if line.startswith("Udp:")]
    return int(rows[1][rows[0].index("OutDatagrams")])


class Datagrams:
    """A `_measure.Probe`: UDP datagrams sent over a phase, per 100 messages."""

    def __init__(self) -> None:
        self.start = udp_datagrams_sent()

    def finish(self, messages: int) -> dict[str, float]:
        # Both directions (requests, responses, standalone ACKs), counted
        # machine-wide: a neighbour's UDP traffic inflates it.
        return {"datagrams_per_100_msgs": 100 * (udp_datagrams_sent() - self.start) / messages}


async def measure_sequential(request: Call, n: int, server_pid: int) -> dict[str, float]:
    """One request at a time: round-trip latency percentiles in microseconds."""
    figures = await _measure.measure_sequential(
        request, n, warmup=min(500, n), server_pid=server_pid, probes=(Datagrams,)
    )
    return rounded(figures)


async def measure_closed_loop(
    request: Call, inflight: int, warmup: float, duration: float, server_pid: int
) -> dict[str, float]:
    """`inflight` callers each keep one request outstanding; messages per second."""
    window = await _measure.measure_closed_loop(
        request,
        inflight,
        warmup=warmup,
        duration=duration,
        server_pid=server_pid,
        probes=(Datagrams,),
    )
    figures = rounded(window.per_message())
    return {
        "msgs_per_s": round(window.msgs_per_s),
        "client_us_per_msg": figures["client_us_per_msg"],
        "server_us_per_msg": figures["server_us_per_msg"],
        "datagrams_per_100_msgs": figures["datagrams_per_100_msgs"],
    }


# ------------------------------------------------------------------ raw aioquic


class RawEchoServer(QuicConnectionProtocol):
    """Echo every length-prefixed frame on the stream it came from."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.buffers: dict[int, bytearray] = {}

    def quic_event_received(self, event: QuicEvent) -> None:
        if not isinstance(event, StreamDataReceived):
            return
        buffer = self.buffers.setdefault(event.stream_id, bytearray())
        buffer += event.data
        complete = split_frames(buffer)
        if complete or event.end_stream:
            self._quic.send_stream_data(
                event.stream_id, bytes(buffer[:complete]), end_stream=event.end_stream
            )
            del buffer[:complete]
        if event.end_stream:
            del self.buffers[event.stream_id]


class RawEchoClient(QuicConnectionProtocol):
    """Requests matched to responses by their 8-byte id, on one stream or one each."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pending: dict[bytes, asyncio.Future[bytes]] = {}
        self.buffers: dict[int, bytearray] = {}
        self.handshake = asyncio.get_running_loop().create_future()
        self.long_stream: int | None = None
        self.flush_scheduled = False

    def quic_event_received(self, event: QuicEvent) -> None:
        if isinstance(event, StreamDataReceived):
            buffer = self.buffers.setdefault(event.stream_id, bytearray())
            buffer += event.data
            complete = split_frames(buffer)
            offset = 0
            while offset < complete:
                size = LENGTH.unpack_from(buffer, offset)[0]
                payload = bytes(buffer[offset + 4 : offset + 4 + size])
                self.pending.pop(payload[:8]).set_result(payload)
                offset += 4 + size
            del buffer[:complete]
            if event.end_stream:
                del self.buffers[event.stream_id]
        elif isinstance(event, HandshakeCompleted) and not self.handshake.done():
            self.handshake.set_result(event)

    def _flush_soon(self) -> None:
        # Coalesce sends of one loop iteration, as the Flare link does.
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self.flush_scheduled = False
        self.transmit()

    def _send(self, stream_id: int, request_id: int, end_stream: bool) -> asyncio.Future[bytes]:
        payload = make_payload(request_id)
        future = self._loop.create_future()
        self.pending[payload[:8]] = future
        self._quic.send_stream_data(
            stream_id, LENGTH.pack(len(payload)) + payload, end_stream=end_stream
        )
        self._flush_soon()
        return future

    async def request_new_stream(self, request_id: int) -> bytes:
        stream_id = self._quic.get_next_available_stream_id()
        return await self._send(stream_id, request_id, True)

    async def request_long_stream(self, request_id: int) -> bytes:
        if self.long_stream is None:
            self.long_stream = self._quic.get_next_available_stream_id()
        return await self._send(self.long_stream, request_id, False)


async def raw_connect(
    port: int, cafile: str, *, draining: bool = False
) -> tuple[asyncio.DatagramTransport, RawEchoClient]:
    """A raw aioquic client connection, handshake done.

    `draining`: read the socket through Flare's `DrainingSocket` (every queued
    datagram per wake-up) instead of asyncio's one datagram per loop iteration.
    """
    configuration = QuicConfiguration(
        is_client=True, alpn_protocols=[RAW_ALPN], server_name="localhost"
    )
    configuration.load_verify_locations(cafile)
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((LOOPBACK, 0))
    protocol = RawEchoClient(QuicConnection(configuration=configuration))
    transport, _ = await loop.create_datagram_endpoint(
        lambda: DrainingSocket(protocol, sock) if draining else protocol, sock=sock
    )
    protocol.connect((LOOPBACK, port))
    await protocol.handshake
    return transport, protocol


# ------------------------------------------------------------------ Flare


async def run_server(args: argparse.Namespace) -> None:
    raw_configuration = QuicConfiguration(is_client=False, alpn_protocols=[RAW_ALPN])
    raw_configuration.load_cert_chain(args.cert, args.key)
    raw = await serve(LOOPBACK, 0, configuration=raw_configuration, create_protocol=RawEchoServer)
    raw_port = raw._transport.get_extra_info("sockname")[1] if raw._transport else 0
    # The same raw echo, reading its socket through Flare's DrainingSocket.
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((LOOPBACK, 0))
    sock.setblocking(False)
    drained = QuicServer(configuration=raw_configuration, create_protocol=RawEchoServer)
    await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: DrainingSocket(drained, sock), sock=sock
    )
    tls = TLSFiles(args.cert, args.key)
    server = Server([(SERVICE, BenchService())])
    await server.start(quic=f"{LOOPBACK}:0", tls=tls)
    eager = Server([(SERVICE, BenchService())], options=ServerOptions(eager_handlers=True))
    await eager.start(quic=f"{LOOPBACK}:0", tls=tls)
    ports = (raw_port, sock.getsockname()[1], server.port("quic"), eager.port("quic"))
    print("READY", *ports, flush=True)
    await asyncio.Event().wait()


# ------------------------------------------------------------------ client side


async def flare_connect(port: int, cafile: str, **options: Any) -> QuicChannel:
    options.setdefault("tickets", None)
    channel = await flare_runtime.connect(f"quic://localhost:{port}", ca_file=cafile, **options)
    assert isinstance(channel, QuicChannel)
    return channel


def echo_call(channel: QuicChannel) -> Call:
    """One Flare echo call on `channel` per request number."""

    async def call(request_id: int) -> object:
        return await channel.unary_unary(ECHO, BytesValue(value=make_payload(request_id)))

    return call


async def measure(request: Call, args: argparse.Namespace, server_pid: int) -> dict[str, Any]:
    """Sequential latency and 64-in-flight throughput of one request function."""
    # --seq-n 0 skips the sequential phase (docs/transports/quic.md, "Figures").
    return {
        "seq": await measure_sequential(request, args.seq_n, server_pid)
        if args.seq_n
        else dict.fromkeys(SEQUENTIAL_FIGURES, 0.0),
        "pipelined": await measure_closed_loop(
            request, args.inflight, args.warmup, args.duration, server_pid
        ),
    }


async def measure_handshakes(port: int, cafile: str, n: int) -> dict[str, Any]:
    """Time to first response: full handshake vs resumed, with and without 0-RTT."""
    request = BytesValue(value=make_payload(1))
    samples: dict[str, list[float]] = {"full": [], "resumed": [], "zero_rtt": []}
    accepted = 0
    for _ in range(n):
        for kind in ("full", "resumed", "zero_rtt"):
            tickets = MemoryTicketStore()
            if kind != "full":
                # A ticket from an earlier connection (not timed).
                warm = await flare_connect(port, cafile, tickets=tickets)
                await warm.unary_unary(ECHO, request)
                for _ in range(200):
                    if len(tickets):
                        break
                    await asyncio.sleep(0.001)
                await warm.close()
            start = time.perf_counter()
            channel = await flare_connect(
                port, cafile, tickets=tickets, early_data=kind == "zero_rtt"
            )
            await channel.unary_unary(ECHO, request)
            samples[kind].append((time.perf_counter() - start) * 1000)
            if kind == "zero_rtt":
                await channel.wait_handshake()
                transport: Any = channel.endpoint.transport
                accepted += channel.early_data_accepted and transport.early_calls_passed == 1
            await channel.close()
    return {
        "n": n,
        "full_handshake_first_response_ms": round(statistics.median(samples["full"]), 2),
        "resumed_first_response_ms": round(statistics.median(samples["resumed"]), 2),
        "zero_rtt_first_response_ms": round(statistics.median(samples["zero_rtt"]), 2),
        "zero_rtt_call_in_early_data_fraction": accepted / n,
    }


def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-figure medians of repeated runs (same nested shape), plus the spread of msg/s."""
    out: dict[str, Any] = {}
    for key, value in runs[0].items():
        if isinstance(value, dict):
            out[key] = median_of([run[key] for run in runs])
        else:
            out[key] = round(statistics.median(run[key] for run in runs), 1)
            if key == "msgs_per_s":
                out["msgs_per_s_range"] = [
                    min(run[key] for run in runs),
                    max(run[key] for run in runs),
                ]
                out["msgs_per_s_runs"] = [run[key] for run in runs]
    return out


async def client_main(args: argparse.Namespace, server_pid: int, ports: Sequence[int]) -> Any:
    raw_port, drained_port, flare_port, eager_port = ports
    transport, raw = await raw_connect(raw_port, args.cert)
    drained_transport, drained = await raw_connect(drained_port, args.cert, draining=True)
    channel = await flare_connect(flare_port, args.cert)
    eager_channel = await flare_connect(eager_port, args.cert)

    sides: dict[str, Call] = {
        "raw_one_stream": raw.request_long_stream,
        "raw_stream_per_call": raw.request_new_stream,
        "raw_one_stream_draining": drained.request_long_stream,
        "flare_one_stream": echo_call(channel),
        "flare_eager": echo_call(eager_channel),
    }
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in sides}
    for _ in range(args.reps):  # interleaved, so a noisy neighbour hits every side alike
        for name, request in sides.items():
            runs[name].append(await measure(request, args, server_pid))
    result: dict[str, Any] = {"reps": args.reps}
    result.update({name: median_of(samples) for name, samples in runs.items()})
    await channel.close()
    await eager_channel.close()
    raw.close()
    transport.close()
    drained.close()
    drained_transport.close()
    result["handshake"] = await measure_handshakes(flare_port, args.cert, args.handshakes)
    return result


def start_server(args: argparse.Namespace) -> ServerProcess:
    argv = ["-m", "bench.quic_bench", "--role", "server", "--cert", args.cert, "--key", args.key]
    return ServerProcess(argv, pin=SERVER_CPU, ready_timeout=20, close_timeout=5)


def ratio(a: float, b: float) -> float:
    return round(a / b, 2) if b else 0.0


def rep_ratios(side: dict[str, Any], raw: dict[str, Any]) -> list[float]:
    """Throughput ratio to raw within each interleaved rep (the phases ran seconds apart)."""
    pairs = zip(
        side["pipelined"]["msgs_per_s_runs"], raw["pipelined"]["msgs_per_s_runs"], strict=True
    )
    return [round(a / b, 2) if b else 0.0 for a, b in pairs]


def report(result: dict[str, Any]) -> None:
    """A human table on stderr: each side, then the ratios the issue asks for."""
    raw = result["raw_one_stream"]
    per_call = result["raw_stream_per_call"]
    drained = result["raw_one_stream_draining"]
    flare = result["flare_one_stream"]
    eager = result["flare_eager"]

    def row(label: str, side: dict[str, Any]) -> str:
        pipelined, seq = side["pipelined"], side["seq"]
        low, high = pipelined["msgs_per_s_range"]
        cpu = pipelined["client_us_per_msg"] + pipelined["server_us_per_msg"]
        return (
            f"  {label:<24} {pipelined['msgs_per_s']:>8.0f} msg/s [{low}-{high}]  "
            f"p50 {seq['p50_us']:>6} us  p99 {seq['p99_us']:>7} us  "
            f"CPU us/msg server {pipelined['server_us_per_msg']:>5} client "
            f"{pipelined['client_us_per_msg']:>5} (sum {cpu:.1f})  "
            f"UDP datagrams/100 msgs {pipelined['datagrams_per_100_msgs']} (machine-wide)"
        )

    def cpu(side: dict[str, Any]) -> float:
        pipelined = side["pipelined"]
        return float(pipelined["client_us_per_msg"] + pipelined["server_us_per_msg"])

    per_call_cpu = ratio(
        per_call["pipelined"]["server_us_per_msg"], raw["pipelined"]["server_us_per_msg"]
    )
    per_call_rate = ratio(per_call["pipelined"]["msgs_per_s"], raw["pipelined"]["msgs_per_s"])

    lines = [
        f"QUIC on the asyncio loop, 100-byte unary echo; 64 in flight (median of {result['reps']}"
        " interleaved runs [min-max]) / sequential",
        row("raw aioquic, one stream", raw),
        row("raw aioquic, stream/call", per_call),
        row("raw, one stream, draining", drained),
        row("Flare over QUIC", flare),
        row("Flare, eager handlers", eager),
    ]
    for label, side in (("Flare", flare), ("Flare eager", eager)):
        per_rep = rep_ratios(side, raw)
        best = ratio(
            side["pipelined"]["msgs_per_s_range"][1], raw["pipelined"]["msgs_per_s_range"][1]
        )
        lines.append(
            f"  {label} / raw one stream: throughput "
            f"{ratio(side['pipelined']['msgs_per_s'], raw['pipelined']['msgs_per_s'])}x "
            f"(per rep: median {statistics.median(per_rep):.2f}x, "
            f"{' '.join(f'{r:.2f}' for r in per_rep)}; best/best {best}x), "
            f"CPU per message (both sides) {ratio(cpu(side), cpu(raw))}x, "
            f"p50 {side['seq']['p50_us'] - raw['seq']['p50_us']:+.1f} us"
        )
    lines.append(
        "  Flare / raw one stream with the same draining reads: throughput "
        f"{ratio(flare['pipelined']['msgs_per_s'], drained['pipelined']['msgs_per_s'])}x, "
        f"eager {ratio(eager['pipelined']['msgs_per_s'], drained['pipelined']['msgs_per_s'])}x "
        "(Flare's overhead alone, I/O batching equal)"
    )
    lines += [
        f"  raw stream/call vs one stream: server CPU per message {per_call_cpu}x,"
        f" throughput {per_call_rate}x",
    ]
    handshake = result["handshake"]
    lines.append(
        f"  first response (median of {handshake['n']}): full handshake "
        f"{handshake['full_handshake_first_response_ms']} ms, resumed "
        f"{handshake['resumed_first_response_ms']} ms, resumed + 0-RTT "
        f"{handshake['zero_rtt_first_response_ms']} ms (call in early data "
        f"{handshake['zero_rtt_call_in_early_data_fraction']:.0%})"
    )
    print("\n".join(lines), file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--role", choices=["bench", "server"], default="bench")
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--quick", action="store_true", help="short smoke run")
    parser.add_argument(
        "--seq-n", type=int, default=3000, help="sequential calls per side (0: skip that phase)"
    )
    parser.add_argument("--inflight", type=int, default=64)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--duration", type=float, default=2.0)
    parser.add_argument("--handshakes", type=int, default=20)
    parser.add_argument("--reps", type=int, default=5, help="interleaved repetitions (medians)")
    args = parser.parse_args()
    if args.role == "server":
        set_deadline(300)
        exit_when_stdin_closes()
        asyncio.run(run_server(args))
        return

    if args.quick:
        args.seq_n, args.duration, args.warmup, args.handshakes, args.reps = 500, 0.5, 0.2, 5, 1
    set_deadline(240)
    pin_cpu(CLIENT_CPU)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="flare-quic-bench-") as directory:
        files = write_dev_certificate(directory)
        args.cert, args.key = str(files.certificate), str(files.private_key)
        server = start_server(args)
        try:
            result = asyncio.run(client_main(args, server.pid, server.ports))
        finally:
            server.close()
    result = {
        "bench": "quic",
        "loop": "asyncio",
        "payload_bytes": PAYLOAD_SIZE,
        **result,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(result), flush=True)
    report(result)


if __name__ == "__main__":
    main()
