/**
 * The WebSocket shell: open a socket in a browser or in Node, move bytes.
 *
 * The global `WebSocket` is used when present (browsers, Node ≥ 22); else the
 * `ws` package (Node 20). Only `ws` can set request headers, so the bearer
 * token travels as `Authorization: Bearer …` with `ws` and as the
 * `access_token` query parameter with a standard WebSocket, which cannot set
 * headers (docs/transports/websocket.md: the server accepts both).
 */
import { ConnectionClosedError } from "./errors.js";

/**
 * The part of the WebSocket API this client uses (browsers, undici and `ws` all have it).
 *
 * Handler parameters are `any` so that the DOM's and `ws`'s own event types
 * both fit (a handler property is checked covariantly); this client reads
 * only `data` of a message event and `code` of a close event.
 */
export interface WebSocketLike {
  binaryType: string;
  readonly readyState: number;
  readonly bufferedAmount: number;
  send(data: Uint8Array): void;
  close(code?: number, reason?: string): void;
  /* eslint-disable @typescript-eslint/no-explicit-any */
  onopen: ((event: any) => void) | null;
  onmessage: ((event: any) => void) | null;
  onclose: ((event: any) => void) | null;
  onerror: ((event: any) => void) | null;
  /* eslint-enable @typescript-eslint/no-explicit-any */
  /** `ws` only: stop reading from the socket (back-pressure). */
  pause?: () => void;
  /** `ws` only: read again. */
  resume?: () => void;
}

/** A WebSocket class: the standard constructor, or `ws`'s with its options argument. */
export type WebSocketConstructor = new (
  url: string,
  protocols?: string | string[],
  options?: { headers?: Record<string, string>; perMessageDeflate?: boolean },
) => WebSocketLike;

/** How to open sockets: the class and whether it can send request headers. */
export interface WebSocketFactory {
  readonly WebSocket: WebSocketConstructor;
  readonly supportsHeaders: boolean;
}

let defaultFactory: Promise<WebSocketFactory> | undefined;

/** The global `WebSocket` when there is one, else the `ws` package (imported on first use). */
export function defaultWebSocket(): Promise<WebSocketFactory> {
  defaultFactory ??= (async () => {
    const global = (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (global !== undefined) return { WebSocket: global, supportsHeaders: false };
    // A variable specifier keeps browser bundlers from resolving `ws`.
    const specifier = "ws";
    try {
      const module = (await import(specifier)) as { WebSocket: WebSocketConstructor };
      return { WebSocket: module.WebSocket, supportsHeaders: true };
    } catch {
      throw new ConnectionClosedError(
        "no WebSocket implementation: run in a browser or Node >= 22, or `npm install ws`",
      );
    }
  })();
  return defaultFactory;
}

/** The URL and options to open a Flare WebSocket at `url` carrying `token`. */
export function socketRequest(
  url: string,
  token: string | undefined,
  supportsHeaders: boolean,
): { url: string; headers: Record<string, string> } {
  const parsed = new URL(url);
  if (parsed.protocol !== "ws:" && parsed.protocol !== "wss:") {
    throw new TypeError(`a Flare WebSocket URL starts with ws:// or wss://, got ${url}`);
  }
  if (token === undefined || token === "") return { url: parsed.href, headers: {} };
  if (supportsHeaders) return { url: parsed.href, headers: { Authorization: `Bearer ${token}` } };
  parsed.searchParams.set("access_token", token);
  return { url: parsed.href, headers: {} };
}

/**
 * Open a socket and wait until it is open. Rejects with `ConnectionClosedError`
 * when it fails or closes first, or after `timeoutMs`.
 */
export function openSocket(
  factory: WebSocketFactory,
  url: string,
  headers: Record<string, string>,
  timeoutMs: number,
  signal?: AbortSignal,
): Promise<WebSocketLike> {
  return new Promise((resolve, reject) => {
    const socket = factory.supportsHeaders
      ? new factory.WebSocket(url, [], { headers, perMessageDeflate: false })
      : new factory.WebSocket(url);
    socket.binaryType = "arraybuffer";
    let settled = false;
    const settle = (error?: ConnectionClosedError): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
      socket.onopen = socket.onerror = socket.onclose = null;
      if (error === undefined) {
        resolve(socket);
        return;
      }
      try {
        socket.close();
      } catch {
        // closing a socket that never opened may throw; it is gone either way
      }
      reject(error);
    };
    const onAbort = (): void => settle(new ConnectionClosedError("connect aborted"));
    const timer = setTimeout(
      () => settle(new ConnectionClosedError(`no WebSocket connection within ${timeoutMs} ms`)),
      timeoutMs,
    );
    signal?.addEventListener("abort", onAbort);
    socket.onopen = () => settle();
    socket.onerror = () => settle(new ConnectionClosedError(`cannot connect to ${redact(url)}`));
    socket.onclose = (event: { code: number }) =>
      settle(new ConnectionClosedError(`connection closed during the opening handshake (${event.code})`));
  });
}

/** `url` without its access token, for messages. */
export function redact(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.searchParams.has("access_token")) parsed.searchParams.set("access_token", "…");
    return parsed.href;
  } catch {
    return url;
  }
}
