/**
 * Reconnect with backoff, the resume hook and GOAWAY, against a real server
 * that the test kills and restarts on the same port.
 */
import assert from "node:assert/strict";
import { test } from "node:test";

import { type ClientState, type FlareClient, RpcError, StatusCode, connect } from "@flare/client";

import { ECHO, PUSH_ME, STRING_PUSH, WHO_AM_I } from "./conformance.js";
import { startServer, sleep } from "./helpers.js";

const FAST_BACKOFF = { initialDelayMs: 50, maxDelayMs: 400, multiplier: 2, jitter: 0.2 };

async function waitFor(condition: () => boolean, what: string, timeoutMs = 15_000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!condition()) {
    if (performance.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

test("after the server is killed and restarted, the client reconnects and resumes", async () => {
  let server = await startServer();
  const port = server.port;
  const states: ClientState[] = [];
  const resumed: boolean[] = [];
  const client: FlareClient = connect(server.url, {
    token: "alice-token",
    pushTypes: [STRING_PUSH],
    reconnect: FAST_BACKOFF,
    onStateChange: (state) => states.push(state),
    resume: async (transport, info) => {
      // What the IM does on every connection: log in again, then Sync.
      const who = await transport.unary(WHO_AM_I, {});
      assert.equal(who.value, "alice");
      resumed.push(info.reconnected);
    },
  });
  const pushes = client.pushes([STRING_PUSH])[Symbol.asyncIterator]();
  try {
    assert.equal((await client.unary(ECHO, { value: new Uint8Array([1]) })).value[0], 1);
    assert.deepEqual(resumed, [false]);
    await client.unary(PUSH_ME, { value: 1n });
    assert.equal((await pushes.next()).value!.message.value, "push 0");

    // The handler is attached at once: the call fails while the test awaits the kill.
    const inFlight = client.unary(ECHO, {}, { headers: { "x-sleep": "10" } }).then(
      () => assert.fail("the call survived a killed server"),
      (error: unknown) => error,
    );
    await sleep(100);
    await server.stop("SIGKILL");
    const lost = await inFlight;
    assert.ok(lost instanceof RpcError && lost.code === StatusCode.UNAVAILABLE, String(lost));
    await waitFor(() => client.state === "reconnecting", "the reconnecting state");

    // A call made while the server is down waits for the new connection.
    const waiting = client.unary(ECHO, { value: new Uint8Array([2]) }, { timeoutMs: 15_000 });
    await sleep(600); // several failed attempts, backing off
    const attemptsWhileDown = states.filter((state) => state === "reconnecting").length;
    assert.ok(attemptsWhileDown >= 2, `only ${attemptsWhileDown} reconnect attempts`);
    server = await startServer(port);
    assert.equal((await waiting).value[0], 2);
    assert.deepEqual(resumed, [false, true]);
    assert.equal(client.state, "ready");

    // Pushes keep flowing to the same iterator on the new connection.
    await client.unary(PUSH_ME, { value: 1n });
    assert.equal((await pushes.next()).value!.message.value, "push 0");
  } finally {
    client.close();
    await server.stop();
  }
  assert.equal((await pushes.next()).done, true, "the iterator ends when the client closes");
});

test("a graceful shutdown (GOAWAY) finishes accepted calls; later calls go to the next server", async () => {
  let server = await startServer();
  const port = server.port;
  const client = connect(server.url, { reconnect: FAST_BACKOFF });
  try {
    await client.ready({ timeoutMs: 10_000 });
    const accepted = client.unary(ECHO, { value: new Uint8Array([3]) }, { headers: { "x-sleep": "0.5" } });
    await sleep(100);
    const stopping = server.stop("SIGTERM"); // GOAWAY, then close once the call is done
    assert.equal((await accepted).value[0], 3, "the accepted call completes through GOAWAY");
    await stopping;
    const later = client.unary(ECHO, { value: new Uint8Array([4]) }, { timeoutMs: 15_000 });
    server = await startServer(port);
    assert.equal((await later).value[0], 4);
  } finally {
    client.close();
    await server.stop();
  }
});

test("a call waiting for a connection honours its deadline and its signal", async () => {
  const client = connect("ws://127.0.0.1:9", { reconnect: FAST_BACKOFF }); // nothing listens there
  try {
    const started = performance.now();
    await assert.rejects(client.unary(ECHO, {}, { timeoutMs: 300 }), (error: unknown) => {
      assert.ok(error instanceof RpcError && error.code === StatusCode.DEADLINE_EXCEEDED);
      return true;
    });
    assert.ok(performance.now() - started < 3000);
    const controller = new AbortController();
    const call = client.unary(ECHO, {}, { signal: controller.signal });
    controller.abort();
    await assert.rejects(call, (error: unknown) => error instanceof RpcError && error.code === StatusCode.CANCELLED);
  } finally {
    client.close();
  }
});

test("with reconnect off, a lost connection closes the client", async () => {
  const server = await startServer();
  const client = connect(server.url, { reconnect: false });
  await client.ready({ timeoutMs: 10_000 });
  await server.stop("SIGKILL");
  await client.closed();
  assert.equal(client.state, "closed");
  await assert.rejects(client.unary(ECHO, {}), (error: unknown) => error instanceof RpcError && error.code === StatusCode.UNAVAILABLE);
});
