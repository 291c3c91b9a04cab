/**
 * `@flare/client` against a real Flare server (flare_server.py, the Python
 * runtime over WebSocket): every cardinality, metadata, errors with codes and
 * details, deadlines, cancellation, flow control, pushes, auth.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { StringValueSchema } from "@bufbuild/protobuf/wkt";
import {
  DEFAULT_BACKOFF,
  type FlareClient,
  Metadata,
  RpcError,
  StatusCode,
  type WebSocketConstructor,
  backoffDelay,
  connect,
} from "@flare/client";

import {
  ADMIN,
  BIDI_ECHO,
  COUNT,
  ECHO,
  FLOOD,
  MISSING,
  PUSH_ME,
  STRING_PUSH,
  SUM,
  WHO_AM_I,
} from "./conformance.js";
import { type TestServer, sleep, startServer } from "./helpers.js";

let server: TestServer;
let client: FlareClient;

before(async () => {
  server = await startServer();
  client = connect(server.url, { token: "alice-token", pushTypes: [STRING_PUSH] });
  await client.ready({ timeoutMs: 10_000 });
});

after(async () => {
  client.close();
  await server.stop();
});

async function rejectsWith(promise: Promise<unknown>, code: StatusCode): Promise<RpcError> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof RpcError, `expected an RpcError, got ${String(error)}`);
    assert.equal(StatusCode[error.code], StatusCode[code], error.message);
    return error;
  }
  assert.fail(`expected ${StatusCode[code]}, the call succeeded`);
}

describe("the four cardinalities", () => {
  test("unary: the response, headers and trailers", async () => {
    let headers = Metadata.EMPTY;
    let trailers = Metadata.EMPTY;
    const reply = await client.unary(
      ECHO,
      { value: new Uint8Array([1, 2, 3]) },
      {
        headers: { "x-echo-color": "blue" },
        onHeader: (received) => (headers = received),
        onTrailer: (received) => (trailers = received),
      },
    );
    assert.deepEqual(reply.value, new Uint8Array([1, 2, 3]));
    assert.equal(headers.get("x-echo-color"), "blue");
    assert.equal(trailers.get("x-trailer-color"), "blue");
  });

  test("server stream: every message in order, then the end", async () => {
    const stream = client.serverStream(COUNT, { value: 5n }, { headers: { "x-echo-a": "1" } });
    const values: bigint[] = [];
    for await (const message of stream) values.push(message.value);
    assert.deepEqual(values, [0n, 1n, 2n, 3n, 4n]);
    assert.equal((await stream.headers()).get("x-echo-a"), "1");
    assert.equal(stream.trailers.get("x-trailer-a"), "1");
  });

  test("client stream: an async iterable of requests, one response", async () => {
    async function* numbers(): AsyncGenerator<{ value: bigint }> {
      for (let i = 1n; i <= 100n; i++) yield { value: i };
    }
    const total = await client.clientStream(SUM, numbers());
    assert.equal(total.value, 5050n);
    assert.equal((await client.clientStream(SUM, [])).value, 0n);
  });

  test("bidi stream: send while receiving, half-close ends it", async () => {
    const stream = client.bidiStream(BIDI_ECHO);
    const received: number[] = [];
    const reading = (async () => {
      for await (const message of stream) received.push(message.value[0]!);
    })();
    for (let i = 0; i < 10; i++) await stream.send({ value: new Uint8Array([i]) });
    await stream.closeSend();
    await reading;
    assert.deepEqual(received, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  });

  test("many concurrent calls share one connection", async () => {
    const replies = await Promise.all(
      Array.from({ length: 300 }, (_, i) => client.unary(ECHO, { value: new Uint8Array([i % 256]) })),
    );
    assert.deepEqual(
      replies.map((reply) => reply.value[0]),
      Array.from({ length: 300 }, (_, i) => i % 256),
    );
  });
});

describe("errors", () => {
  test("a status code, message and google.rpc.Status details", async () => {
    const error = await rejectsWith(client.unary(ECHO, {}, { headers: { "x-fail-code": "5" } }), StatusCode.NOT_FOUND);
    assert.equal(error.rawMessage, "failed on purpose");
    assert.deepEqual(
      error.findDetails(StringValueSchema).map((detail) => detail.value),
      ["detail 5"],
    );
  });

  test("a stream fails with the server's code", async () => {
    const stream = client.serverStream(COUNT, { value: 3n }, { headers: { "x-fail-code": "9" } });
    await rejectsWith(
      (async () => {
        for await (const _ of stream) void _;
      })(),
      StatusCode.FAILED_PRECONDITION,
    );
  });

  test("a handler crash is INTERNAL without its text", async () => {
    const error = await rejectsWith(client.unary(ECHO, {}, { headers: { "x-crash": "1" } }), StatusCode.INTERNAL);
    assert.doesNotMatch(error.message, /do-not-leak/);
  });

  test("an unknown route is UNIMPLEMENTED and the connection stays up", async () => {
    await rejectsWith(client.unary(MISSING, {}), StatusCode.UNIMPLEMENTED);
    assert.equal((await client.unary(ECHO, { value: new Uint8Array([7]) })).value[0], 7);
  });

  test("metadata over the server's limit is RESOURCE_EXHAUSTED, sent nowhere", async () => {
    await rejectsWith(client.unary(ECHO, {}, { headers: { "x-big": "x".repeat(20_000) } }), StatusCode.RESOURCE_EXHAUSTED);
  });

  test("a bad metadata key is INVALID_ARGUMENT", async () => {
    await rejectsWith(client.unary(ECHO, {}, { headers: { "X-Upper": "1" } }), StatusCode.INVALID_ARGUMENT);
  });
});

describe("deadlines and cancellation", () => {
  test("a passed deadline is DEADLINE_EXCEEDED, on time", async () => {
    const started = performance.now();
    await rejectsWith(client.unary(ECHO, {}, { timeoutMs: 200, headers: { "x-sleep": "5" } }), StatusCode.DEADLINE_EXCEEDED);
    const elapsed = performance.now() - started;
    assert.ok(elapsed >= 190 && elapsed < 2000, `took ${elapsed} ms`);
  });

  test("a deadline ends a stream", async () => {
    const stream = client.bidiStream(BIDI_ECHO, { timeoutMs: 150 });
    await stream.send({ value: new Uint8Array([1]) });
    await rejectsWith(
      (async () => {
        for await (const _ of stream) void _;
      })(),
      StatusCode.DEADLINE_EXCEEDED,
    );
  });

  test("aborting the signal cancels a unary call", async () => {
    const controller = new AbortController();
    const call = client.unary(ECHO, {}, { signal: controller.signal, headers: { "x-sleep": "5" } });
    setTimeout(() => controller.abort(), 100);
    const started = performance.now();
    await rejectsWith(call, StatusCode.CANCELLED);
    assert.ok(performance.now() - started < 2000);
  });

  test("an already aborted signal sends nothing", async () => {
    await rejectsWith(client.unary(ECHO, {}, { signal: AbortSignal.abort() }), StatusCode.CANCELLED);
  });

  test("aborting cancels a server stream mid-iteration", async () => {
    const controller = new AbortController();
    const stream = client.serverStream(FLOOD, { value: 1000n }, { signal: controller.signal });
    let seen = 0;
    await rejectsWith(
      (async () => {
        for await (const _ of stream) {
          if (++seen === 3) controller.abort();
        }
      })(),
      StatusCode.CANCELLED,
    );
    assert.ok(seen >= 3);
  });

  test("leaving a for-await loop early cancels the stream; the connection keeps working", async () => {
    let seen = 0;
    for await (const _ of client.serverStream(FLOOD, { value: 1000n })) {
      if (++seen === 2) break;
    }
    assert.equal((await client.unary(ECHO, { value: new Uint8Array([9]) })).value[0], 9);
  });
});

describe("flow control", () => {
  test("a 6.4 MB server stream arrives whole through the 256 KiB window", async () => {
    let bytes = 0;
    for await (const chunk of client.serverStream(FLOOD, { value: 100n })) bytes += chunk.value.length;
    assert.equal(bytes, 100 * 64 * 1024);
  });

  test("a sender waits for credit: 40 messages of 100 kB echoed", async () => {
    const stream = client.bidiStream(BIDI_ECHO);
    const payload = new Uint8Array(100_000).fill(7);
    let received = 0;
    const reading = (async () => {
      for await (const message of stream) received += message.value.length;
    })();
    for (let i = 0; i < 40; i++) await stream.send({ value: payload });
    await stream.closeSend();
    await reading;
    assert.equal(received, 40 * 100_000);
  });
});

describe("pushes", () => {
  test("as an iterator and as callbacks, decoded by push type id", async () => {
    const fromCallback: string[] = [];
    const unsubscribe = client.onPush(STRING_PUSH, (message) => {
      fromCallback.push(message.value);
    });
    const iterator = client.pushes([STRING_PUSH])[Symbol.asyncIterator]();
    await client.unary(PUSH_ME, { value: 3n });
    const fromIterator: string[] = [];
    for (let i = 0; i < 3; i++) {
      const push = await iterator.next();
      assert.equal(push.done, false);
      assert.equal(push.value!.typeId, 0x7f01);
      fromIterator.push(push.value!.message.value);
    }
    await iterator.return!();
    await sleep(10);
    unsubscribe();
    assert.deepEqual(fromIterator, ["push 0", "push 1", "push 2"]);
    assert.deepEqual(fromCallback, ["push 0", "push 1", "push 2"]);
  });

  test("a callback that throws or blocks on a promise never holds up calls", async () => {
    const errors: unknown[] = [];
    const local = connect(server.url, {
      pushTypes: [STRING_PUSH],
      onError: (error) => errors.push(error),
    });
    let release!: () => void;
    const blocked = new Promise<void>((resolve) => (release = resolve));
    local.onPush(STRING_PUSH, () => {
      throw new Error("callback bug");
    });
    local.onPush(STRING_PUSH, () => blocked);
    local.onPush(STRING_PUSH, () => Promise.reject(new Error("async callback bug")));
    const reply = await local.unary(PUSH_ME, { value: 2n });
    assert.equal(reply.value, 2n);
    assert.equal((await local.unary(ECHO, { value: new Uint8Array([1]) })).value[0], 1);
    await sleep(20);
    assert.equal(errors.length, 4);
    release();
    local.close();
  });
});

describe("auth", () => {
  test("the token authenticates the connection", async () => {
    assert.equal((await client.unary(WHO_AM_I, {})).value, "alice");
    assert.equal((await client.unary(ADMIN, {})).value, "admin ok");
  });

  test("no token: UNAUTHENTICATED; a token without the scope: PERMISSION_DENIED", async () => {
    const anonymous = connect(server.url);
    await rejectsWith(anonymous.unary(WHO_AM_I, {}), StatusCode.UNAUTHENTICATED);
    anonymous.close();
    const bob = connect(server.url, { token: async () => "bob-token" });
    assert.equal((await bob.unary(WHO_AM_I, {})).value, "bob");
    await rejectsWith(bob.unary(ADMIN, {}), StatusCode.PERMISSION_DENIED);
    bob.close();
  });

  test("a standard WebSocket (as in browsers) sends the token as ?access_token=", async () => {
    const { WebSocket } = await import("ws");
    // Wrapping ws's class in a one-argument constructor hides its header option,
    // exactly what a browser's WebSocket offers.
    class BrowserLikeWebSocket extends WebSocket {
      constructor(url: string) {
        assert.match(url, /access_token=bob-token/);
        super(url);
      }
    }
    const browser = connect(server.url, { token: "bob-token", WebSocket: BrowserLikeWebSocket });
    assert.equal((await browser.unary(WHO_AM_I, {})).value, "bob");
    browser.close();
  });
});

describe("configuration", () => {
  test("the browser's WebSocket class fits the WebSocket option (checked by tsc)", () => {
    const fits = (browserClass: typeof WebSocket): WebSocketConstructor => browserClass;
    assert.equal(typeof fits, "function");
  });

  test("backoff grows exponentially up to its cap, shortened by at most the jitter", () => {
    assert.equal(backoffDelay(DEFAULT_BACKOFF, 1, 0), 250);
    assert.equal(backoffDelay(DEFAULT_BACKOFF, 3, 0), 1000);
    assert.equal(backoffDelay(DEFAULT_BACKOFF, 30, 0), 10_000);
    assert.equal(backoffDelay(DEFAULT_BACKOFF, 3, 1), 800);
  });

  test("a URL that is not ws:// or wss:// is refused at once", () => {
    assert.throws(() => connect("http://127.0.0.1:1"), TypeError);
  });
});
