/**
 * `FlareClient`: the application's handle on a Flare server over WebSocket.
 *
 * It opens a connection (a `Session`), keeps one open, and calls through it:
 *
 * * **Calls wait for a connection.** A call started while the client connects
 *   or reconnects waits for the connection, within its own deadline and
 *   signal; the deadline counts from the call, not from the connection.
 * * **Reconnect with backoff.** When the connection is lost (server restart,
 *   network, keepalive timeout) the calls on it fail with UNAVAILABLE, and the
 *   client reconnects after an exponential, jittered delay, forever until
 *   `close()` (or `reconnect: false`). A GOAWAY starts a new connection at
 *   once, while the old one finishes the calls it accepted.
 * * **Resume hook.** `resume(transport, info)` runs on every new connection
 *   before waiting calls are let through: log in again, re-subscribe, `Sync`.
 *   Its calls go straight to the new connection. If it throws, that
 *   connection is dropped and the client retries with backoff.
 * * **Pushes** outlive connections (see pushes.ts).
 */
import {
  type DescMessage,
  type MessageInitShape,
  type MessageShape,
} from "@bufbuild/protobuf";

import {
  type BidiStream,
  type CallOptions,
  type CallTransport,
  type RequestStream,
  type ServerStream,
} from "./calls.js";
import { ConnectionClosedError, RpcError } from "./errors.js";
import { Metadata } from "./metadata.js";
import { type ProtocolConfig, type Settings, protocolConfig } from "./protocol/config.js";
import { type Push, PushHub, type PushCallback } from "./pushes.js";
import { type PushType, type Route } from "./routes.js";
import { Session } from "./session.js";
import { StatusCode } from "./status.js";
import { isWebTransportUrl, openWebTransport } from "./webtransport.js";
import {
  type WebSocketConstructor,
  type WebSocketFactory,
  type WebSocketLike,
  defaultWebSocket,
  openSocket,
  redact,
  socketRequest,
} from "./websocket.js";

/** Where the client stands. */
export type ClientState = "connecting" | "ready" | "reconnecting" | "closed";

/** Exponential backoff between reconnect attempts. */
export interface BackoffOptions {
  /** Delay before the first retry (ms). */
  readonly initialDelayMs: number;
  /** Longest delay (ms). */
  readonly maxDelayMs: number;
  /** Growth per attempt. */
  readonly multiplier: number;
  /** Fraction of each delay drawn at random (0: none, 1: anywhere in [0, delay]). */
  readonly jitter: number;
}

/** The backoff defaults: 250 ms doubling up to 10 s, 20 % jitter. */
export const DEFAULT_BACKOFF: BackoffOptions = Object.freeze({
  initialDelayMs: 250,
  maxDelayMs: 10_000,
  multiplier: 2,
  jitter: 0.2,
});

/** The delay before reconnect attempt `attempt` (1-based); `random` is in [0, 1). */
export function backoffDelay(backoff: BackoffOptions, attempt: number, random: number): number {
  const base = Math.min(
    backoff.maxDelayMs,
    backoff.initialDelayMs * backoff.multiplier ** Math.max(0, attempt - 1),
  );
  return base * (1 - backoff.jitter * random);
}

/** What the resume hook is told. */
export interface ResumeInfo {
  /** False on the first connection, true on every later one. */
  readonly reconnected: boolean;
  /** How many connections were opened before this one. */
  readonly connections: number;
}

/** Options of `connect`. */
export interface ClientOptions {
  /**
   * Bearer token, sent once per connection; a function is asked again on every
   * (re)connection, so a refreshed token is used.
   */
  readonly token?: string | (() => string | undefined | Promise<string | undefined>) | undefined;
  /** Push types to decode (e.g. a generated module's `PUSH_TYPES`). */
  readonly pushTypes?: readonly PushType[] | undefined;
  /** Reconnect policy; `false` turns reconnecting off. */
  readonly reconnect?: Partial<BackoffOptions> | false | undefined;
  /** Runs on every new connection before waiting calls go through (see above). */
  readonly resume?: ((transport: CallTransport, info: ResumeInfo) => void | Promise<void>) | undefined;
  /** Told of every state change; `error` says why a connection failed or was lost. */
  readonly onStateChange?: ((state: ClientState, error?: Error) => void) | undefined;
  /** Failures of push callbacks (default: `console.error`). */
  readonly onError?: ((error: unknown) => void) | undefined;
  /** Protocol settings and timeouts (docs/wire-format.md §4, §8.2). */
  readonly protocol?:
    | (Partial<Omit<ProtocolConfig, "settings">> & { settings?: Partial<Settings> })
    | undefined;
  /** Limit on opening a connection: WebSocket handshake plus Flare HELLO (ms, default 10 s). */
  readonly connectTimeoutMs?: number | undefined;
  /** Undelivered pushes an iterator may hold (default 1024). */
  readonly maxPendingPushes?: number | undefined;
  /** The WebSocket class to use (default: the global one, else the `ws` package). */
  readonly WebSocket?: WebSocketConstructor | undefined;
  /**
   * For an `https://` URL (WebTransport, experimental, browsers only): the
   * options of `new WebTransport`, e.g. `serverCertificateHashes` for a
   * self-signed development certificate.
   */
  readonly webTransport?: WebTransportOptions | undefined;
}

interface Waiter {
  resolve(session: Session): void;
  reject(error: RpcError): void;
}

/** A client of one Flare server over WebSocket; see the module comment. */
export class FlareClient implements CallTransport {
  private current: Session | undefined;
  private readyNow = false;
  private stateNow: ClientState = "connecting";
  private waiters = new Set<Waiter>();
  private connections = 0;
  private failures = 0;
  private retryTimer: ReturnType<typeof setTimeout> | undefined;
  private connecting = false;
  private readonly config: ProtocolConfig;
  private readonly backoff: BackoffOptions | undefined;
  private readonly hub: PushHub;
  private readonly connectAbort = new AbortController();
  private readonly closedPromise: Promise<void>;
  private resolveClosed!: () => void;

  /** Use `connect(url, options)`. */
  constructor(
    readonly url: string,
    private readonly options: ClientOptions = {},
  ) {
    if (!isWebTransportUrl(url)) socketRequest(url, undefined, false); // TypeError for a bad URL
    this.config = protocolConfig(options.protocol ?? {});
    this.backoff =
      options.reconnect === false ? undefined : { ...DEFAULT_BACKOFF, ...options.reconnect };
    const onError = options.onError ?? ((error: unknown) => console.error("flare push callback failed:", error));
    this.hub = new PushHub(
      options.maxPendingPushes ?? 1024,
      {
        pause: () => this.current?.pauseReading() ?? false,
        resume: () => this.current?.resumeReading(),
      },
      onError,
    );
    for (const pushType of options.pushTypes ?? []) this.hub.register(pushType);
    this.closedPromise = new Promise((resolve) => (this.resolveClosed = resolve));
    void this.openConnection();
  }

  /** Where the client stands now. */
  get state(): ClientState {
    return this.stateNow;
  }

  /**
   * Resolves once a connection is ready (handshake done, resume hook finished).
   * Rejects with UNAVAILABLE when the client closes first, or, with
   * `reconnect: false`, when the connection fails.
   */
  async ready(options: { signal?: AbortSignal; timeoutMs?: number } = {}): Promise<void> {
    const deadline = options.timeoutMs === undefined ? undefined : performance.now() + options.timeoutMs;
    await this.acquire(deadline, options.signal);
  }

  /** Resolves when the client is closed. */
  closed(): Promise<void> {
    return this.closedPromise;
  }

  /** Close the client: open calls fail with CANCELLED, push iterators end, no reconnect. */
  close(): void {
    if (this.stateNow === "closed") return;
    this.setState("closed");
    clearTimeout(this.retryTimer);
    this.connectAbort.abort();
    this.current?.close("client closed");
    this.current = undefined;
    for (const waiter of this.waiters) {
      waiter.reject(new RpcError(StatusCode.UNAVAILABLE, "the client is closed"));
    }
    this.waiters.clear();
    this.hub.close();
    this.resolveClosed();
  }

  // -------------------------------------------------------------- pushes

  /** Call `callback` for every push of `pushType` (also across reconnects); returns an unsubscribe. */
  onPush<D extends DescMessage>(pushType: PushType<D>, callback: PushCallback<D>): () => void {
    return this.hub.on(pushType, callback);
  }

  /**
   * Iterate pushes of `types` (every registered type when omitted) until the
   * client closes. Each iterator sees every push from the moment it is made.
   */
  pushes<T extends PushType>(types?: readonly T[]): AsyncIterable<Push<T>> {
    return this.hub.iterate(types);
  }

  // -------------------------------------------------------------- calls

  async unary<I extends DescMessage, O extends DescMessage>(
    route: Route<I, O>,
    request: MessageInitShape<I>,
    options: CallOptions = {},
  ): Promise<MessageShape<O>> {
    const [session, rest] = await this.bind(route, options);
    return session.unary(route, request, rest);
  }

  serverStream<I extends DescMessage, O extends DescMessage>(
    route: Route<I, O>,
    request: MessageInitShape<I>,
    options: CallOptions = {},
  ): ServerStream<MessageShape<O>> {
    if (this.readyNow && this.current !== undefined && !this.current.draining) {
      return this.current.serverStream(route, request, options);
    }
    return new PendingStream(
      this.bind(route, options).then(([session, rest]) => session.serverStream(route, request, rest)),
    );
  }

  async clientStream<I extends DescMessage, O extends DescMessage>(
    route: Route<I, O>,
    requests: RequestStream<I>,
    options: CallOptions = {},
  ): Promise<MessageShape<O>> {
    const [session, rest] = await this.bind(route, options);
    return session.clientStream(route, requests, rest);
  }

  bidiStream<I extends DescMessage, O extends DescMessage>(
    route: Route<I, O>,
    options: CallOptions = {},
  ): BidiStream<MessageInitShape<I>, MessageShape<O>> {
    if (this.readyNow && this.current !== undefined && !this.current.draining) {
      return this.current.bidiStream(route, options);
    }
    return new PendingStream(
      this.bind(route, options).then(([session, rest]) => session.bidiStream(route, rest)),
    );
  }

  /** The ready session for a call, and its options with the time spent waiting taken off. */
  private async bind(route: Route, options: CallOptions): Promise<[Session, CallOptions]> {
    const current = this.current;
    if (this.readyNow && current !== undefined && !current.draining) return [current, options];
    const started = performance.now();
    const timeoutMs = options.timeoutMs ?? route.options.defaultTimeoutMs;
    const deadline = timeoutMs === undefined ? undefined : started + timeoutMs;
    const session = await this.acquire(deadline, options.signal);
    if (timeoutMs === undefined) return [session, options];
    return [session, { ...options, timeoutMs: Math.max(0, deadline! - performance.now()) }];
  }

  /** Wait for a ready session, within `deadline` and `signal`. */
  private acquire(deadline: number | undefined, signal: AbortSignal | undefined): Promise<Session> {
    const current = this.current;
    if (this.readyNow && current !== undefined && !current.draining) return Promise.resolve(current);
    if (this.stateNow === "closed") {
      return Promise.reject(new RpcError(StatusCode.UNAVAILABLE, "the client is closed"));
    }
    if (signal?.aborted) return Promise.reject(new RpcError(StatusCode.CANCELLED, "cancelled by the client"));
    return new Promise<Session>((resolve, reject) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const onAbort = (): void => done(new RpcError(StatusCode.CANCELLED, "cancelled by the client"));
      const done = (result: Session | RpcError): void => {
        this.waiters.delete(waiter);
        clearTimeout(timer);
        signal?.removeEventListener("abort", onAbort);
        if (result instanceof RpcError) reject(result);
        else resolve(result);
      };
      const waiter: Waiter = { resolve: done, reject: done };
      this.waiters.add(waiter);
      if (deadline !== undefined) {
        timer = setTimeout(
          () =>
            done(
              new RpcError(
                StatusCode.DEADLINE_EXCEEDED,
                "deadline exceeded while waiting for a connection",
              ),
            ),
          Math.max(0, deadline - performance.now()),
        );
      }
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  }

  // -------------------------------------------------------------- connections

  private isClosed(): boolean {
    return this.stateNow === "closed";
  }

  private setState(state: ClientState, error?: Error): void {
    if (this.stateNow === state && error === undefined) return;
    this.stateNow = state;
    try {
      this.options.onStateChange?.(state, error);
    } catch (failure) {
      queueMicrotask(() => {
        throw failure;
      });
    }
  }

  private async openConnection(): Promise<void> {
    if (this.connecting || this.stateNow === "closed") return;
    this.connecting = true;
    let session: Session | undefined;
    try {
      const token = typeof this.options.token === "function" ? await this.options.token() : this.options.token;
      const timeoutMs = this.options.connectTimeoutMs ?? 10_000;
      const started = performance.now();
      const socket = isWebTransportUrl(this.url)
        ? await openWebTransport(this.url, token, this.options.webTransport ?? {}, timeoutMs, this.connectAbort.signal)
        : await this.openWebSocket(token, timeoutMs);
      if (this.isClosed()) {
        socket.close(1000);
        return;
      }
      session = new Session(socket, this.config, {
        onPush: (typeId, data) => this.hub.deliver(typeId, data),
        onGoAway: (from) => this.onGoAway(from),
        onClosed: (from, reason) => this.onSessionClosed(from, reason),
      });
      const previous = this.current;
      this.current = session;
      this.readyNow = false;
      await withTimeout(session.ready(), timeoutMs - (performance.now() - started), "no HELLO from the server");
      const info: ResumeInfo = { reconnected: this.connections > 0, connections: this.connections };
      this.connections += 1;
      if (this.options.resume !== undefined) await this.options.resume(session, info);
      if (session.closed || this.current !== session) throw new ConnectionClosedError(session.closeReason);
      this.failures = 0;
      this.readyNow = true;
      this.connecting = false;
      this.setState("ready");
      if (previous !== undefined && previous !== session && previous.openCalls === 0) {
        previous.close("replaced after GOAWAY", StatusCode.UNAVAILABLE);
      }
      for (const waiter of [...this.waiters]) waiter.resolve(session);
    } catch (error) {
      this.connecting = false;
      if (this.isClosed()) return;
      if (session !== undefined && this.current === session) {
        this.current = undefined;
        session.close("resume failed", StatusCode.UNAVAILABLE);
      }
      this.connectionFailed(asError(error));
    }
  }

  private async openWebSocket(token: string | undefined, timeoutMs: number): Promise<WebSocketLike> {
    const factory: WebSocketFactory =
      this.options.WebSocket !== undefined
        ? { WebSocket: this.options.WebSocket, supportsHeaders: false }
        : await defaultWebSocket();
    const request = socketRequest(this.url, token, factory.supportsHeaders);
    return openSocket(factory, request.url, request.headers, timeoutMs, this.connectAbort.signal);
  }

  private onGoAway(session: Session): void {
    if (session !== this.current) return;
    // New calls go to a new connection; this one finishes what it accepted.
    this.readyNow = false;
    this.setState("reconnecting");
    void this.openConnection();
  }

  private onSessionClosed(session: Session, reason: string): void {
    if (session !== this.current || this.stateNow === "closed") return;
    this.current = undefined;
    this.readyNow = false;
    if (this.connecting) return; // a connection attempt in progress reports its own failure
    this.connectionFailed(new ConnectionClosedError(reason));
  }

  private connectionFailed(error: Error): void {
    if (this.backoff === undefined) {
      for (const waiter of [...this.waiters]) {
        waiter.reject(new RpcError(StatusCode.UNAVAILABLE, error.message));
      }
      this.setState("closed", error);
      this.hub.close();
      this.resolveClosed();
      return;
    }
    this.failures += 1;
    this.setState("reconnecting", error);
    const delay = backoffDelay(this.backoff, this.failures, Math.random());
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => void this.openConnection(), delay);
  }
}

/**
 * Connect to the Flare WebSocket endpoint at `url` (`ws://` or `wss://`), or,
 * in a browser, to a WebTransport endpoint (`https://host:port/flare`, see
 * `ClientOptions.webTransport`). Returns at once; calls wait for the
 * connection (see `FlareClient`).
 */
export function connect(url: string, options: ClientOptions = {}): FlareClient {
  return new FlareClient(url, options);
}

function asError(error: unknown): Error {
  if (error instanceof Error) return error;
  return new ConnectionClosedError(String(error));
}

function withTimeout<T>(promise: Promise<T>, ms: number, message: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new ConnectionClosedError(message)), Math.max(0, ms));
    promise.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (error: unknown) => {
        clearTimeout(timer);
        reject(error);
      },
    );
  });
}

/** A stream whose call starts once a connection is ready. */
class PendingStream<I, O> implements BidiStream<I, O> {
  private stream: BidiStream<I, O> | undefined;
  private cancelled: string | undefined;
  private iterating = false;

  constructor(private readonly started: Promise<BidiStream<I, O> | ServerStream<O>>) {
    started.then(
      (stream) => {
        this.stream = stream as BidiStream<I, O>;
        if (this.cancelled !== undefined) stream.cancel(this.cancelled);
      },
      () => undefined, // reported by whatever awaits the stream
    );
  }

  private async bound(): Promise<BidiStream<I, O>> {
    return (await this.started) as BidiStream<I, O>;
  }

  get trailers(): Metadata {
    return this.stream?.trailers ?? Metadata.EMPTY;
  }

  async headers(): Promise<Metadata> {
    return (await this.bound()).headers();
  }

  cancel(reason = "cancelled by the client"): void {
    if (this.stream !== undefined) this.stream.cancel(reason);
    else this.cancelled ??= reason;
  }

  async send(request: I): Promise<void> {
    const stream = await this.bound();
    if (this.cancelled !== undefined) throw new RpcError(StatusCode.CANCELLED, this.cancelled);
    return stream.send(request);
  }

  async closeSend(): Promise<void> {
    return (await this.bound()).closeSend();
  }

  [Symbol.asyncIterator](): AsyncIterator<O> {
    if (this.iterating) throw new TypeError("a stream can be iterated once");
    this.iterating = true;
    let inner: AsyncIterator<O> | undefined;
    const open = async (): Promise<AsyncIterator<O>> => {
      if (inner === undefined) {
        const stream = await this.bound();
        if (this.cancelled !== undefined) throw new RpcError(StatusCode.CANCELLED, this.cancelled);
        inner = stream[Symbol.asyncIterator]();
      }
      return inner;
    };
    return {
      next: async () => (await open()).next(),
      return: async () => {
        if (inner !== undefined) return inner.return?.() ?? { done: true, value: undefined };
        this.cancel();
        return { done: true, value: undefined };
      },
    };
  }
}

export { redact };
