/**
 * `Session`: calls over one Flare connection (one WebSocket). The asyncio
 * endpoint layer of flare_runtime/wire/client.py, in TypeScript: it drives the
 * sans-I/O `Connection` with the socket's bytes and one timer, and turns its
 * events into settled promises and stream items.
 *
 * Costs per call: a unary call is one promise and one map entry; a stream is
 * one small object. Output queued in one tick goes out as one WebSocket message.
 * A session never reconnects: `FlareClient` opens a new one.
 */
import {
  type DescMessage,
  type MessageInitShape,
  type MessageShape,
  create,
  fromBinary,
  toBinary,
} from "@bufbuild/protobuf";

import {
  type BidiStream,
  type CallOptions,
  type CallTransport,
  type RequestStream,
  type ServerStream,
} from "./calls.js";
import { ConnectionClosedError, LocalProtocolError, RpcError } from "./errors.js";
import { Metadata } from "./metadata.js";
import { type ProtocolConfig } from "./protocol/config.js";
import { Connection, LimitExceededError } from "./protocol/connection.js";
import { type Event } from "./protocol/events.js";
import { CloseCode } from "./protocol/frames.js";
import { type Route } from "./routes.js";
import { StatusCode } from "./status.js";
import { type WebSocketLike } from "./websocket.js";

/** What a session tells its owner. */
export interface SessionHooks {
  /** A push arrived (raw; the owner decodes it). */
  onPush(typeId: number, data: Uint8Array): void;
  /** The server sent GOAWAY: start no new calls here. */
  onGoAway(session: Session, reason: string): void;
  /** The connection is gone; every call on it has failed. */
  onClosed(session: Session, reason: string): void;
}

const now = (): number => performance.now();

/** Client-side state of one call. */
class CallRecord {
  readonly messages: Uint8Array[] = [];
  headers: Metadata | undefined;
  trailers: Metadata = Metadata.EMPTY;
  ended = false;
  error: RpcError | undefined;
  /** Unary and client-stream calls: the one response, settled at the end. */
  single: { resolve(data: Uint8Array): void; reject(error: RpcError): void } | undefined;
  data: Uint8Array | undefined;
  count = 0;
  private waiters: Array<() => void> = [];
  detachSignal: (() => void) | undefined;

  constructor(
    readonly callId: number,
    readonly options: CallOptions,
  ) {}

  /** Resolves at the next change (a message, headers, credit, the end). */
  changed(): Promise<void> {
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  wake(): void {
    const waiters = this.waiters;
    if (waiters.length === 0) return;
    this.waiters = [];
    for (const waiter of waiters) waiter();
  }
}

function requestBytes<I extends DescMessage>(schema: I, request: MessageInitShape<I>): Uint8Array {
  return toBinary(schema, create(schema, request));
}

function parseResponse<O extends DescMessage>(schema: O, data: Uint8Array): MessageShape<O> {
  try {
    return fromBinary(schema, data);
  } catch {
    throw new RpcError(StatusCode.INTERNAL, "response message does not parse");
  }
}

function abortError(signal: AbortSignal): RpcError {
  const reason: unknown = signal.reason;
  if (reason instanceof RpcError) return reason;
  return new RpcError(StatusCode.CANCELLED, "cancelled by the client");
}

/** Calls over one open, handshaken WebSocket. */
export class Session implements CallTransport {
  readonly conn: Connection;
  /** Why the session is unusable ("" while it is usable). */
  closeReason = "";
  /** True once GOAWAY arrived or the connection closed: start no calls here. */
  draining = false;
  private readonly calls = new Map<number, CallRecord>();
  private flushScheduled = false;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private timerAt: number | undefined;
  private finished = false;
  private readonly handshake: Promise<void>;
  private handshakeDone: { resolve(): void; reject(error: Error): void } | undefined;

  constructor(
    private readonly socket: WebSocketLike,
    config: ProtocolConfig,
    private readonly hooks: SessionHooks,
  ) {
    this.conn = new Connection(config, now());
    this.handshake = new Promise((resolve, reject) => {
      this.handshakeDone = { resolve, reject };
    });
    this.handshake.catch(() => undefined); // observed by `ready()` callers only
    socket.onmessage = (event: { data: unknown }) => this.onSocketMessage(event.data);
    socket.onclose = (event: { code: number }) => this.lost(`connection lost (WebSocket close ${event.code})`);
    socket.onerror = () => this.lost("connection lost (WebSocket error)");
    this.flush();
    this.rearm();
  }

  /** Resolves once the server's HELLO arrived; rejects if the connection closes first. */
  ready(): Promise<void> {
    return this.handshake;
  }

  /** True once the connection is gone. */
  get closed(): boolean {
    return this.finished;
  }

  /** Calls not yet ended. */
  get openCalls(): number {
    return this.calls.size;
  }

  /** Stop reading the socket (`ws` only; browsers cannot). Returns whether it could. */
  pauseReading(): boolean {
    if (this.socket.pause === undefined) return false;
    this.socket.pause();
    return true;
  }

  /** Read the socket again after `pauseReading`. */
  resumeReading(): void {
    this.socket.resume?.();
  }

  /** Close the connection: open calls fail with `code` (CANCELLED by default). */
  close(reason = "client closing", code: StatusCode = StatusCode.CANCELLED): void {
    if (this.finished) return;
    this.failAll(new RpcError(code, reason));
    this.conn.close(CloseCode.NO_ERROR, reason);
    this.handleEvents(this.conn.eventsReceived());
    this.flush();
    this.finish(reason);
  }

  // -------------------------------------------------------------- calls

  unary<I extends DescMessage, O extends DescMessage>(
    route: Route<I, O>,
    request: MessageInitShape<I>,
    options: CallOptions = {},
  ): Promise<MessageShape<O>> {
    return new Promise<Uint8Array>((resolve, reject) => {
      const record = this.start(route, options, requestBytes(route.input, request), true);
      record.single = { resolve, reject };
      this.settleIfEnded(record);
    }).then((data) => parseResponse(route.output, data));
  }

  serverStream<I extends DescMessage, O extends DescMessage>(
    route: Route<I, O>,
    request: MessageInitShape<I>,
    options: CallOptions = {},
  ): ServerStream<MessageShape<O>> {
    const record = this.start(route, options, requestBytes(route.input, request), true);
    return new StreamCall(this, route, record);
  }

  async clientStream<I extends DescMessage, O extends DescMessage>(
    route: Route<I, O>,
    requests: RequestStream<I>,
    options: CallOptions = {},
  ): Promise<MessageShape<O>> {
    const record = this.start(route, options, undefined, false);
    const response = new Promise<Uint8Array>((resolve, reject) => {
      record.single = { resolve, reject };
    });
    response.catch(() => undefined); // awaited below, after the requests are sent
    const stream = new StreamCall(this, route, record);
    try {
      for await (const request of requests) {
        if (record.ended) break;
        await stream.send(request);
      }
      await stream.closeSend();
    } catch (error) {
      stream.cancel();
      if (record.error !== undefined) throw record.error;
      throw error;
    }
    return parseResponse(route.output, await response);
  }

  bidiStream<I extends DescMessage, O extends DescMessage>(
    route: Route<I, O>,
    options: CallOptions = {},
  ): BidiStream<MessageInitShape<I>, MessageShape<O>> {
    const record = this.start(route, options, undefined, false);
    return new StreamCall(this, route, record);
  }

  // -------------------------------------------------------------- internals used by StreamCall

  /** Open a call; throws `RpcError` when it cannot start. */
  private start(
    route: Route,
    options: CallOptions,
    message: Uint8Array | undefined,
    endStream: boolean,
  ): CallRecord {
    const signal = options.signal;
    if (signal?.aborted) throw abortError(signal);
    if (this.finished || this.draining) {
      throw new RpcError(StatusCode.UNAVAILABLE, this.closeReason || "connection closed");
    }
    const timeoutMs = options.timeoutMs ?? route.options.defaultTimeoutMs;
    let callId: number;
    try {
      callId = this.conn.startCall(route.wireId, Metadata.from(options.headers).entries(), {
        timeoutMs,
        now: now(),
        message,
        endStream,
      });
    } catch (error) {
      if (error instanceof LimitExceededError) {
        throw new RpcError(StatusCode.RESOURCE_EXHAUSTED, error.message);
      }
      if (error instanceof LocalProtocolError || error instanceof ConnectionClosedError) {
        throw new RpcError(StatusCode.UNAVAILABLE, this.closeReason || error.message);
      }
      if (error instanceof RangeError || error instanceof TypeError) {
        throw new RpcError(StatusCode.INVALID_ARGUMENT, error.message);
      }
      throw error;
    }
    const record = new CallRecord(callId, options);
    this.calls.set(callId, record);
    if (signal !== undefined) {
      const onAbort = (): void => this.cancelCall(record, abortError(signal));
      signal.addEventListener("abort", onAbort, { once: true });
      record.detachSignal = () => signal.removeEventListener("abort", onAbort);
    }
    this.scheduleFlush();
    if (timeoutMs !== undefined) this.rearm();
    return record;
  }

  /** Cancel `record` locally and on the wire with `error` (CANCELLED). */
  cancelCall(record: CallRecord, error: RpcError): void {
    if (record.ended) return;
    this.calls.delete(record.callId);
    try {
      this.conn.cancel(record.callId, error.code, error.rawMessage);
    } catch {
      // the connection is closed: nothing to tell the server
    }
    this.end(record, error);
    this.scheduleFlush();
  }

  /** Send one request on a streaming call, waiting for credit; throws the call's error. */
  async sendOn(record: CallRecord, data: Uint8Array): Promise<void> {
    for (;;) {
      if (record.ended) {
        throw record.error ?? new RpcError(StatusCode.FAILED_PRECONDITION, "the call has ended");
      }
      if (this.conn.availableCredit(record.callId) > 0) break;
      await record.changed();
    }
    try {
      this.conn.sendMessage(record.callId, data);
    } catch (error) {
      if (error instanceof LimitExceededError) {
        const failure = new RpcError(StatusCode.RESOURCE_EXHAUSTED, error.message);
        this.cancelCall(record, failure);
        throw failure;
      }
      if (error instanceof LocalProtocolError) {
        throw new RpcError(StatusCode.FAILED_PRECONDITION, "closeSend() was called");
      }
      throw error;
    }
    this.scheduleFlush();
  }

  /** Half-close a streaming call. */
  halfCloseOn(record: CallRecord): void {
    if (record.ended) return;
    try {
      this.conn.halfClose(record.callId);
    } catch {
      return; // already half-closed, or the connection is gone
    }
    this.scheduleFlush();
  }

  /** The application consumed `size` bytes of `record`'s responses. */
  consumed(record: CallRecord, size: number): void {
    if (record.ended) return;
    this.conn.acknowledge(record.callId, size);
    if (this.conn.hasDataToSend) this.scheduleFlush();
  }

  // -------------------------------------------------------------- I/O

  private onSocketMessage(data: unknown): void {
    if (this.finished) return;
    if (!(data instanceof ArrayBuffer)) {
      // Text messages are a protocol error (docs/transports/websocket.md).
      this.conn.close(CloseCode.PROTOCOL_ERROR, "text WebSocket message");
    } else {
      this.conn.receiveData(new Uint8Array(data), now());
    }
    this.handleEvents(this.conn.eventsReceived());
    this.flush();
    this.rearm();
  }

  private handleEvents(events: Event[]): void {
    for (const event of events) {
      switch (event.kind) {
        case "message-received": {
          const record = this.calls.get(event.callId);
          if (record === undefined) break;
          if (record.single !== undefined) {
            // The one response of a call that ends with it: END_CALL releases
            // its bytes, so no WINDOW_UPDATE is sent for it.
            record.data = event.data;
            record.count += 1;
          } else {
            record.messages.push(event.data);
            record.wake();
          }
          break;
        }
        case "call-ended": {
          const record = this.calls.get(event.callId);
          if (record === undefined) break;
          this.calls.delete(event.callId);
          if (event.final !== undefined) {
            if (record.single !== undefined) {
              record.data = event.final;
              record.count += 1;
            } else {
              record.messages.push(event.final);
            }
          }
          const trailers = Metadata.fromWire(event.trailers);
          record.trailers = trailers;
          const error =
            event.status === StatusCode.OK
              ? undefined
              : RpcError.fromWire(event.status, event.message, event.details, trailers);
          this.end(record, error);
          break;
        }
        case "headers-received": {
          const record = this.calls.get(event.callId);
          if (record === undefined) break;
          record.headers = Metadata.fromWire(event.metadata);
          this.callback(() => record.options.onHeader?.(record.headers!));
          record.wake();
          break;
        }
        case "window-updated":
          this.calls.get(event.callId)?.wake();
          break;
        case "push-received":
          this.hooks.onPush(event.typeId, event.data);
          break;
        case "handshake-completed":
          this.handshakeDone?.resolve();
          break;
        case "goaway-received":
          this.draining = true;
          this.closeReason = event.reason || "the server is going away";
          this.hooks.onGoAway(this, this.closeReason);
          break;
        case "connection-closed": {
          const reason = event.reason || CloseCode[event.code]!.toLowerCase();
          this.closeReason = reason;
          this.failAll(new RpcError(StatusCode.UNAVAILABLE, `connection closed: ${reason}`));
          this.flush();
          this.finish(reason);
          break;
        }
        case "ping-received":
        case "pong-received":
          break;
      }
    }
  }

  /** End `record` (with `error`, or OK) and settle whoever waits on it. */
  private end(record: CallRecord, error: RpcError | undefined): void {
    if (record.ended) return;
    record.ended = true;
    record.error = error;
    record.detachSignal?.();
    const trailers = record.trailers;
    this.callback(() => record.options.onTrailer?.(trailers));
    this.settleIfEnded(record);
    record.wake();
  }

  private settleIfEnded(record: CallRecord): void {
    const single = record.single;
    if (single === undefined || !record.ended) return;
    record.single = undefined;
    if (record.error !== undefined) single.reject(record.error);
    else if (record.count === 1 && record.data !== undefined) single.resolve(record.data);
    else {
      single.reject(
        new RpcError(StatusCode.INTERNAL, `expected one response message, got ${record.count}`),
      );
    }
  }

  private failAll(error: RpcError): void {
    const records = [...this.calls.values()];
    this.calls.clear();
    for (const record of records) this.end(record, error);
  }

  /** Run an application callback; its failure must not break the connection. */
  private callback(run: () => void): void {
    try {
      run();
    } catch (error) {
      queueMicrotask(() => {
        throw error;
      });
    }
  }

  private lost(reason: string): void {
    if (this.finished) return;
    this.closeReason ||= reason;
    this.failAll(new RpcError(StatusCode.UNAVAILABLE, `connection closed: ${this.closeReason}`));
    this.finish(this.closeReason);
  }

  private finish(reason: string): void {
    if (this.finished) return;
    this.finished = true;
    this.draining = true;
    this.closeReason ||= reason;
    clearTimeout(this.timer);
    this.timer = undefined;
    this.handshakeDone?.reject(new ConnectionClosedError(reason));
    this.socket.onmessage = null;
    this.socket.onclose = null;
    this.socket.onerror = null;
    try {
      this.socket.close(1000);
    } catch {
      // already closing
    }
    this.hooks.onClosed(this, reason);
  }

  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    queueMicrotask(() => {
      this.flushScheduled = false;
      this.flush();
    });
  }

  private flush(): void {
    const data = this.conn.dataToSend();
    if (data.length === 0 || this.socket.readyState !== 1) return;
    this.socket.send(data);
  }

  /** Arm the one timer at `conn.getTimer()` when that is earlier than the armed one. */
  private rearm(): void {
    if (this.finished) return;
    const when = this.conn.getTimer();
    if (when === undefined || (this.timerAt !== undefined && this.timerAt <= when)) return;
    clearTimeout(this.timer);
    this.timerAt = when;
    this.timer = setTimeout(() => this.onTimer(), Math.max(0, when - now()));
  }

  private onTimer(): void {
    this.timer = undefined;
    this.timerAt = undefined;
    if (this.finished) return;
    this.conn.handleTimer(now());
    this.handleEvents(this.conn.eventsReceived());
    this.flush();
    this.rearm();
  }
}

/** A streaming call on a `Session`: iterate responses; send requests (client and bidi streams). */
class StreamCall<I extends DescMessage, O extends DescMessage>
  implements BidiStream<MessageInitShape<I>, MessageShape<O>>
{
  private iterating = false;

  constructor(
    private readonly session: Session,
    private readonly route: Route<I, O>,
    private readonly record: CallRecord,
  ) {}

  get trailers(): Metadata {
    return this.record.trailers;
  }

  async headers(): Promise<Metadata> {
    const record = this.record;
    while (record.headers === undefined && record.messages.length === 0 && !record.ended) {
      await record.changed();
    }
    return record.headers ?? Metadata.EMPTY;
  }

  cancel(reason = "cancelled by the client"): void {
    this.session.cancelCall(this.record, new RpcError(StatusCode.CANCELLED, reason));
  }

  send(request: MessageInitShape<I>): Promise<void> {
    return this.session.sendOn(this.record, requestBytes(this.route.input, request));
  }

  closeSend(): Promise<void> {
    this.session.halfCloseOn(this.record);
    return Promise.resolve();
  }

  [Symbol.asyncIterator](): AsyncIterator<MessageShape<O>> {
    if (this.iterating) throw new TypeError("a stream can be iterated once");
    this.iterating = true;
    const record = this.record;
    const session = this.session;
    const output = this.route.output;
    return {
      next: async (): Promise<IteratorResult<MessageShape<O>>> => {
        for (;;) {
          const data = record.messages.shift();
          if (data !== undefined) {
            session.consumed(record, data.length);
            try {
              return { done: false, value: fromBinary(output, data) };
            } catch {
              this.cancel("response message does not parse");
              throw new RpcError(StatusCode.INTERNAL, "response message does not parse");
            }
          }
          if (record.ended) {
            if (record.error !== undefined) throw record.error;
            return { done: true, value: undefined };
          }
          await record.changed();
        }
      },
      return: async (): Promise<IteratorResult<MessageShape<O>>> => {
        // Leaving a `for await` loop early abandons the call.
        if (!record.ended) this.cancel();
        return { done: true, value: undefined };
      },
    };
  }
}
