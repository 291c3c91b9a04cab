"""Micro-benchmark of the sans-I/O protocol core: a 100-byte unary call round trip.

One iteration is everything both endpoints do for one unary call, with no I/O:

  client  start_call(wire_id, message=100 B, end_stream) + data_to_send()
  server  receive_data() + events_received()  -> CallStarted (compact: with the request)
  server  send_message(100 B) + end_call(OK) + data_to_send()
  client  receive_data() + events_received()  -> MessageReceived, CallEnded

For reference it also times the floor any framing needs: one `struct` pack and
one unpack + slice per frame for the same four frames. Prints µs per call
(median and best of several timing blocks) and the ratio to that floor, and
the Python heap bytes an idle, established server connection holds.

Usage: python -m bench.protocol_bench [--calls 20000] [--repeat 7]
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import struct
import sys
import time
import tracemalloc

from flare_runtime.protocol import CLIENT, SERVER, Connection, ProtocolConfig

PAYLOAD = b"x" * 100
WIRE_ID = 1 << 16 | 1


def flare_round_trips(calls: int) -> float:
    """Seconds for `calls` unary round trips through a client and a server Connection."""
    config = ProtocolConfig(keepalive_interval=None)
    client = Connection(CLIENT, config)
    server = Connection(SERVER, config)
    server.receive_data(client.data_to_send(), 0.0)
    client.receive_data(server.data_to_send(), 0.0)
    server.events_received()
    client.events_received()
    started = time.perf_counter()
    for _ in range(calls):
        call_id = client.start_call(WIRE_ID, message=PAYLOAD, end_stream=True)
        server.receive_data(client.data_to_send(), 0.0)
        server.events_received()
        server.send_message(call_id, PAYLOAD)
        server.end_call(call_id)
        client.receive_data(server.data_to_send(), 0.0)
        client.events_received()
    return time.perf_counter() - started


def struct_floor(calls: int) -> float:
    """Seconds for the bare minimum: pack and unpack four 10-byte headers per call."""
    header = struct.Struct(">IBBI")
    pack = header.pack
    unpack = header.unpack_from
    started = time.perf_counter()
    for call_id in range(1, calls + 1):
        request = pack(12, 2, 0, call_id) + b"\x00" * 13 + pack(100, 4, 1, call_id) + PAYLOAD
        unpack(request, 0)
        unpack(request, 23)
        request[33:133]
        response = pack(100, 4, 0, call_id) + PAYLOAD + pack(4, 6, 0, call_id) + b"\x00" * 4
        unpack(response, 0)
        response[10:110]
        unpack(response, 110)
    return time.perf_counter() - started


def idle_connection_bytes(count: int = 2_000) -> float:
    """Python heap bytes held per established, idle server `Connection` (tracemalloc)."""
    hello = Connection(CLIENT, ProtocolConfig()).data_to_send()
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    connections = []
    for _ in range(count):
        connection = Connection(SERVER, ProtocolConfig())
        connection.receive_data(hello, 0.0)
        connection.events_received()
        connection.data_to_send()
        connections.append(connection)
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    # The list holding them is not part of a connection's cost.
    return (grown - sys.getsizeof(connections)) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    flare_round_trips(1_000)  # warm up
    flare_runs = [flare_round_trips(args.calls) for _ in range(args.repeat)]
    floor_runs = [struct_floor(args.calls) for _ in range(args.repeat)]
    flare = statistics.median(flare_runs)
    flare_us = flare / args.calls * 1e6
    floor_us = statistics.median(floor_runs) / args.calls * 1e6
    print(
        json.dumps(
            {
                "bench": "protocol_unary_100B_round_trip",
                "calls": args.calls,
                "flare_us_per_call": round(flare_us, 2),
                # The best block: what the code costs when the (shared) CPU is not busy.
                "flare_best_us_per_call": round(min(flare_runs) / args.calls * 1e6, 2),
                "struct_floor_us_per_call": round(floor_us, 2),
                "ratio_to_floor": round(flare_us / floor_us, 2),
                "calls_per_s": round(args.calls / flare),
                "idle_server_connection_bytes": round(idle_connection_bytes()),
            }
        )
    )


if __name__ == "__main__":
    main()
