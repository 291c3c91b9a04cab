/**
 * The sans-I/O client `Connection`, without sockets or sleeps: bytes in, events
 * and bytes out, time passed in. The byte layouts are the examples of
 * docs/wire-format.md §10, so the doc and this implementation cannot drift.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import {
  CloseCode,
  Connection,
  type Event,
  FlowControlBlockedError,
  LimitExceededError,
  encodeEndCall,
  encodeGoAway,
  encodeHeaders,
  encodeHello,
  encodeMessage,
  encodePing,
  encodePush,
  encodeWindowUpdate,
  protocolConfig,
  FLAG_END_CALL,
} from "@flare/client/protocol";
import { LocalProtocolError, StatusCode } from "@flare/client";

import { hex, toHex } from "./helpers.js";

const DEFAULT_SETTINGS: Array<[number, number]> = [
  [1, 262144],
  [2, 4194304],
  [3, 1000],
  [4, 262144],
  [5, 16384],
];
const ROUTE = 0x00010002;

/** A client whose server HELLO (default settings, compact calls as given) has arrived. */
function established(compact: boolean, now = 0, overrides = {}): Connection {
  const conn = new Connection(protocolConfig(overrides), now);
  conn.dataToSend();
  conn.receiveData(encodeHello(1, 1, compact ? [...DEFAULT_SETTINGS, [6, 1]] : DEFAULT_SETTINGS), now);
  const events = conn.eventsReceived();
  assert.equal(events[0]?.kind, "handshake-completed");
  return conn;
}

function closedWith(events: Event[]): { code: CloseCode; reason: string } | undefined {
  const closed = events.find((event) => event.kind === "connection-closed");
  return closed?.kind === "connection-closed" ? { code: closed.code, reason: closed.reason } : undefined;
}

describe("handshake", () => {
  test("the client HELLO is the documented bytes (§10)", () => {
    const conn = new Connection();
    assert.equal(
      toHex(conn.dataToSend()),
      toHex(
        hex(`00 00 00 2d 01 00 00 00 00 00 46 4c 41 52 45 00 01 00 01
             00 01 00 04 00 00  00 02 00 40 00 00  00 03 00 00 03 e8
             00 04 00 04 00 00  00 05 00 00 40 00  00 06 00 00 00 01`),
      ),
    );
  });

  test("a server HELLO naming an unsupported version closes with UNSUPPORTED_VERSION", () => {
    const conn = new Connection();
    conn.dataToSend();
    conn.receiveData(hex("00 00 00 09 01 00 00 00 00 00 46 4c 41 52 45 00 02 00 03"), 0);
    assert.equal(closedWith(conn.eventsReceived())?.code, CloseCode.UNSUPPORTED_VERSION);
    assert.equal(toHex(conn.dataToSend()).slice(8, 10), "0d"); // a CLOSE frame went out
  });

  test("a server HELLO naming a range is a protocol error", () => {
    const conn = new Connection();
    conn.receiveData(encodeHello(1, 2, []), 0);
    assert.equal(closedWith(conn.eventsReceived())?.code, CloseCode.PROTOCOL_ERROR);
  });

  test("a first frame other than HELLO is a protocol error", () => {
    const conn = new Connection();
    conn.receiveData(encodePing(new Uint8Array(8)), 0);
    assert.match(closedWith(conn.eventsReceived())!.reason, /PING before HELLO/);
  });

  test("no HELLO within the handshake timeout closes the connection", () => {
    const conn = new Connection(protocolConfig({ handshakeTimeoutMs: 1000 }), 0);
    assert.equal(conn.getTimer(), 1000);
    conn.handleTimer(999);
    assert.equal(conn.closed, false);
    conn.handleTimer(1000);
    assert.match(closedWith(conn.eventsReceived())!.reason, /handshake timeout/);
  });
});

describe("calls", () => {
  test("a unary call to a server without compact calls is the documented bytes (§10)", () => {
    const conn = established(false);
    const callId = conn.startCall(ROUTE, [["authorization", "Bearer abc"]], {
      timeoutMs: 1500,
      now: 0,
      message: hex("0a 02 68 69"),
      endStream: true,
    });
    assert.equal(callId, 1);
    assert.equal(
      toHex(conn.dataToSend()),
      toHex(
        hex(`00 00 00 26 02 00 00 00 00 01  00 01 00 02  00 00 00 00 00 16 e3 60
             01 0d 61 75 74 68 6f 72 69 7a 61 74 69 6f 6e 0a 42 65 61 72 65 72 20 61 62 63
             00 00 00 04 04 01 00 00 00 01  0a 02 68 69`),
      ),
    );
  });

  test("the same call to a server with compact calls rides in CALL_START (§3.2)", () => {
    const conn = established(true);
    conn.startCall(ROUTE, [["authorization", "Bearer abc"]], {
      timeoutMs: 1500,
      message: hex("0a 02 68 69"),
      endStream: true,
    });
    assert.equal(
      toHex(conn.dataToSend()),
      toHex(
        hex(`00 00 00 2a 02 01 00 00 00 01  00 01 00 02  00 00 00 00 00 16 e3 60
             01 0d 61 75 74 68 6f 72 69 7a 61 74 69 6f 6e 0a 42 65 61 72 65 72 20 61 62 63
             0a 02 68 69`),
      ),
    );
  });

  test("the server's answer decodes to headers, a message and OK (§10)", () => {
    const conn = established(false);
    conn.startCall(ROUTE, [], { message: hex("0a 02 68 69"), endStream: true });
    conn.receiveData(
      hex(`00 00 00 0c 03 00 00 00 00 01 01 08 78 2d 73 65 72 76 65 72 01 61
           00 00 00 04 04 00 00 00 00 01 0a 02 6f 6b
           00 00 00 04 06 00 00 00 00 01 00 00 00 00`),
      0,
    );
    const events = conn.eventsReceived();
    assert.deepEqual(
      events.map((event) => event.kind),
      ["headers-received", "message-received", "call-ended"],
    );
    assert.deepEqual(events[0]!.kind === "headers-received" && events[0]!.metadata, [["x-server", "a"]]);
    assert.equal(events[1]!.kind === "message-received" && toHex(events[1]!.data), "0a026f6b");
    assert.equal(events[2]!.kind === "call-ended" && events[2]!.status, StatusCode.OK);
    assert.equal(conn.openCalls, 0);
  });

  test("a compact end carries the last message with the end (§3.4)", () => {
    const conn = established(true);
    conn.startCall(ROUTE, [], { message: hex("0a 02 68 69"), endStream: true });
    conn.receiveData(hex("00 00 00 04 04 02 00 00 00 01 0a 02 6f 6b"), 0);
    const [ended] = conn.eventsReceived();
    assert.equal(ended?.kind, "call-ended");
    assert.equal(ended.kind === "call-ended" && toHex(ended.final!), "0a026f6b");
  });

  test("an error status decodes its message and trailers (§10)", () => {
    const conn = established(false);
    conn.startCall(ROUTE, [], { endStream: true });
    conn.startCall(ROUTE, [], { endStream: true });
    conn.receiveData(
      hex("00 00 00 17 06 00 00 00 00 02 05 07 6e 6f 20 72 6f 6f 6d 00 01 09 72 65 74 72 79 2d 62 69 6e 01 01"),
      0,
    );
    const [ended] = conn.eventsReceived();
    assert.ok(ended?.kind === "call-ended");
    assert.equal(ended.status, StatusCode.NOT_FOUND);
    assert.equal(ended.message, "no room");
    assert.equal(ended.trailers[0]![0], "retry-bin");
    assert.deepEqual(ended.trailers[0]![1], new Uint8Array([1]));
  });

  test("input in any chunking gives the same events (a byte at a time)", () => {
    const answer = encodeHeaders(1, [["x-a", "b"]]);
    const stream = new Uint8Array([
      ...answer,
      ...encodeMessage(1, hex("0a 01 61")),
      ...encodePush(0x00030001, hex("08 01")),
      ...encodeEndCall(1, 0),
    ]);
    const whole = established(false);
    whole.startCall(ROUTE, [], { endStream: true });
    whole.receiveData(stream, 0);
    const bytewise = established(false);
    bytewise.startCall(ROUTE, [], { endStream: true });
    const events: Event[] = [];
    for (const byte of stream) {
      bytewise.receiveData(new Uint8Array([byte]), 0);
      events.push(...bytewise.eventsReceived());
    }
    assert.deepEqual(events, whole.eventsReceived());
    assert.equal(events.length, 4);
  });

  test("a frame for a call this side already ended is ignored (§5.3)", () => {
    const conn = established(false);
    const callId = conn.startCall(ROUTE, [], { endStream: true });
    conn.cancel(callId);
    conn.receiveData(new Uint8Array([...encodeMessage(callId, hex("00")), ...encodeEndCall(callId, 0)]), 0);
    assert.deepEqual(conn.eventsReceived(), []);
    assert.equal(conn.closed, false);
  });

  test("a deadline ends the call locally and sends CANCEL 4 (§5.4)", () => {
    const conn = established(false, 0);
    conn.startCall(ROUTE, [], { timeoutMs: 250, now: 0, endStream: true });
    conn.dataToSend();
    assert.equal(conn.getTimer(), 250);
    conn.handleTimer(250);
    const [ended] = conn.eventsReceived();
    assert.ok(ended?.kind === "call-ended" && ended.local);
    assert.equal(ended.status, StatusCode.DEADLINE_EXCEEDED);
    assert.equal(toHex(conn.dataToSend()).slice(0, 22), toHex(hex("00 00 00 12 07 00 00 00 00 01 04")));
  });

  test("GOAWAY fails the calls above last_call_id as not processed and refuses new ones", () => {
    const conn = established(false);
    for (let i = 0; i < 3; i++) conn.startCall(ROUTE, [], { endStream: true });
    conn.receiveData(encodeGoAway(1, "deploy"), 0);
    const events = conn.eventsReceived();
    const failed = events.filter((event) => event.kind === "call-ended").map((event) => event.kind === "call-ended" && event.callId);
    assert.deepEqual(failed, [2, 3]);
    assert.equal(events.at(-1)?.kind, "goaway-received");
    assert.throws(() => conn.startCall(ROUTE), LocalProtocolError);
    assert.equal(conn.openCalls, 1);
  });

  test("a server PING is answered with a PONG of the same bytes", () => {
    const conn = established(false);
    conn.receiveData(hex("00 00 00 08 0a 00 00 00 00 00 00 00 00 00 00 00 00 01"), 0);
    assert.equal(toHex(conn.dataToSend()), toHex(hex("00 00 00 08 0b 00 00 00 00 00 00 00 00 00 00 00 00 01")));
  });
});

describe("flow control (§6)", () => {
  test("calls pipelined before the server's HELLO assume 65536 and gain the difference", () => {
    const conn = new Connection();
    const callId = conn.startCall(ROUTE);
    assert.equal(conn.availableCredit(callId), 65536);
    conn.receiveData(encodeHello(1, 1, DEFAULT_SETTINGS), 0);
    assert.equal(conn.availableCredit(callId), 262144);
  });

  test("a sender may go while credit is positive, then waits for WINDOW_UPDATE", () => {
    const conn = established(false);
    const callId = conn.startCall(ROUTE);
    const big = new Uint8Array(200_000);
    assert.equal(conn.sendMessage(callId, big), 62144);
    assert.equal(conn.sendMessage(callId, big), -137856);
    assert.throws(() => conn.sendMessage(callId, big), FlowControlBlockedError);
    conn.receiveData(encodeWindowUpdate(callId, 200_000), 0);
    const [updated] = conn.eventsReceived();
    assert.ok(updated?.kind === "window-updated" && updated.credit === 62144);
    conn.sendMessage(callId, big);
  });

  test("consumed bytes go back in one WINDOW_UPDATE once half the window is consumed", () => {
    const conn = established(false);
    const callId = conn.startCall(ROUTE, [], { endStream: true });
    conn.dataToSend();
    conn.receiveData(encodeMessage(callId, new Uint8Array(100_000)), 0);
    conn.receiveData(encodeMessage(callId, new Uint8Array(100_000)), 0);
    conn.acknowledge(callId, 100_000);
    assert.equal(conn.dataToSend().length, 0);
    conn.acknowledge(callId, 100_000);
    assert.equal(toHex(conn.dataToSend()), toHex(encodeWindowUpdate(callId, 200_000)));
  });

  test("a server MESSAGE without credit closes with FLOW_CONTROL_ERROR", () => {
    const conn = established(false);
    const callId = conn.startCall(ROUTE, [], { endStream: true });
    conn.receiveData(encodeMessage(callId, new Uint8Array(262_144)), 0);
    conn.receiveData(encodeMessage(callId, new Uint8Array(1)), 0);
    assert.equal(closedWith(conn.eventsReceived())?.code, CloseCode.FLOW_CONTROL_ERROR);
  });
});

describe("keepalive (§8.2)", () => {
  test("a PING after the interval; no answer within the timeout closes", () => {
    const conn = established(false, 0, { keepaliveIntervalMs: 1000, keepaliveTimeoutMs: 500 });
    assert.equal(conn.getTimer(), 1000);
    conn.handleTimer(1000);
    assert.equal(conn.dataToSend()[4], 0x0a);
    assert.equal(conn.getTimer(), 1500);
    conn.handleTimer(1500);
    assert.equal(closedWith(conn.eventsReceived())?.code, CloseCode.KEEPALIVE_TIMEOUT);
  });

  test("any input keeps the connection alive", () => {
    const conn = established(false, 0, { keepaliveIntervalMs: 1000, keepaliveTimeoutMs: 500 });
    conn.handleTimer(1000);
    conn.receiveData(hex("00 00 00 08 0b 00 00 00 00 00 00 00 00 00 00 00 00 01"), 1200);
    conn.handleTimer(1500);
    assert.equal(conn.closed, false);
    assert.equal(conn.getTimer(), 2200);
  });
});

describe("limits (§7)", () => {
  test("an oversized MESSAGE fails its call with RESOURCE_EXHAUSTED and is skipped unread", () => {
    const conn = established(false, 0, { settings: { maxMessageSize: 1000 } });
    const first = conn.startCall(ROUTE, [], { endStream: true });
    const second = conn.startCall(ROUTE, [], { endStream: true });
    conn.dataToSend();
    const oversized = encodeMessage(first, new Uint8Array(5000));
    conn.receiveData(oversized.subarray(0, 100), 0); // the header is enough to decide
    const [ended] = conn.eventsReceived();
    assert.ok(ended?.kind === "call-ended" && ended.status === StatusCode.RESOURCE_EXHAUSTED);
    assert.equal(conn.dataToSend()[4], 0x07); // CANCEL 8 went out
    conn.receiveData(new Uint8Array([...oversized.subarray(100), ...encodeEndCall(second, 0)]), 0);
    const [ok] = conn.eventsReceived();
    assert.ok(ok?.kind === "call-ended" && ok.callId === second && ok.status === StatusCode.OK);
    assert.equal(conn.closed, false);
  });

  test("metadata larger than the server accepts is refused locally, nothing queued", () => {
    const conn = established(false);
    assert.throws(() => conn.startCall(ROUTE, [["x-big", "x".repeat(20_000)]]), LimitExceededError);
    assert.equal(conn.dataToSend().length, 0);
  });
});

describe("hostile server input closes the connection with the right code", () => {
  const cases: Array<[string, Uint8Array, CloseCode, RegExp]> = [
    ["an unknown frame type", hex("00 00 00 00 7f 00 00 00 00 00"), CloseCode.PROTOCOL_ERROR, /unknown frame type 0x7f/],
    ["a frame over MAX_FRAME_SIZE, before its payload", hex("00 10 00 00 03 00 00 00 00 01"), CloseCode.FRAME_TOO_LARGE, /exceeds max_frame_size/],
    ["a PUSH over MAX_MESSAGE_SIZE", hex("01 00 00 00 09 00 00 00 00 01"), CloseCode.FRAME_TOO_LARGE, /PUSH of/],
    ["a MESSAGE for a call never started", encodeMessage(9, hex("00")), CloseCode.PROTOCOL_ERROR, /never started/],
    ["a server-side CALL_START", hex("00 00 00 0d 02 00 00 00 00 01 00 00 00 01 00 00 00 00 00 00 00 00 00"), CloseCode.PROTOCOL_ERROR, /must not send CALL_START/],
    ["a WINDOW_UPDATE of 0", hex("00 00 00 04 08 00 00 00 00 01 00 00 00 00"), CloseCode.PROTOCOL_ERROR, /out of range/],
    ["a metadata block with a lying count", hex("00 00 00 01 03 00 00 00 00 01 7f"), CloseCode.PROTOCOL_ERROR, /metadata entry count/],
    ["invalid UTF-8 in a status message", hex("00 00 00 06 06 00 00 00 00 01 05 02 c3 28 00 00"), CloseCode.PROTOCOL_ERROR, /UTF-8/],
    ["a 6-byte varint", hex("00 00 00 0a 06 00 00 00 00 01 05 80 80 80 80 80 01 00 00 00"), CloseCode.PROTOCOL_ERROR, /varint/],
    ["a second HELLO", encodeHello(1, 1, []), CloseCode.PROTOCOL_ERROR, /duplicate HELLO/],
    ["an unknown close code", hex("00 00 00 02 0d 00 00 00 00 00 00 63"), CloseCode.PROTOCOL_ERROR, /unknown close code 99/],
  ];
  for (const [name, input, code, reason] of cases) {
    test(name, () => {
      const conn = established(false);
      conn.startCall(ROUTE, [], { endStream: true });
      conn.dataToSend();
      conn.receiveData(input, 0);
      const closed = closedWith(conn.eventsReceived());
      assert.equal(closed?.code, code);
      assert.match(closed!.reason, reason);
      assert.equal(conn.openCalls, 0);
      conn.receiveData(encodeEndCall(1, 0), 0); // input after the close is ignored
      assert.deepEqual(conn.eventsReceived(), []);
    });
  }

  test("a MESSAGE with the END_CALL flag before any HELLO is a protocol error", () => {
    const conn = new Connection();
    conn.startCall(ROUTE, [], { endStream: true });
    conn.receiveData(encodeMessage(1, hex("00"), FLAG_END_CALL), 0);
    assert.equal(closedWith(conn.eventsReceived())?.code, CloseCode.PROTOCOL_ERROR);
  });
});
