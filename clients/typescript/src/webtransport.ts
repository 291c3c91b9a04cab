/**
 * WebTransport (experimental, browsers): the Flare wire protocol on one
 * bidirectional WebTransport stream (docs/transports/webtransport.md).
 *
 * `connect("https://host:4433/flare", { webTransport: {...} })` opens a
 * WebTransport session at that URL (the token as the `access_token` query
 * parameter: a browser cannot set headers on it), opens one bidirectional
 * stream, and runs the same `Session` over it as over a WebSocket: this module
 * presents the stream as a `WebSocketLike`.
 */
import { ConnectionClosedError } from "./errors.js";
import { type WebSocketLike, redact } from "./websocket.js";

/** Whether `url` names a WebTransport endpoint (`https://`) rather than a WebSocket one. */
export function isWebTransportUrl(url: string): boolean {
  return url.startsWith("https:");
}

/** A WebTransport stream seen as a WebSocket: what `Session` needs. */
class WebTransportSocket implements WebSocketLike {
  binaryType = "arraybuffer";
  readyState = 1;
  bufferedAmount = 0;
  onopen: ((event: unknown) => void) | null = null;
  onmessage: ((event: { data: ArrayBuffer }) => void) | null = null;
  onclose: ((event: { code: number }) => void) | null = null;
  onerror: ((event: unknown) => void) | null = null;
  private readonly writer: WritableStreamDefaultWriter<Uint8Array>;

  constructor(
    private readonly transport: WebTransport,
    stream: WebTransportBidirectionalStream,
  ) {
    this.writer = stream.writable.getWriter();
    void this.read(stream.readable.getReader());
    transport.closed.then(
      () => this.ended(1000),
      () => this.ended(1006),
    );
  }

  send(data: Uint8Array): void {
    if (this.readyState !== 1) return;
    this.bufferedAmount += data.byteLength;
    this.writer.write(data).then(
      () => (this.bufferedAmount -= data.byteLength),
      () => this.ended(1006),
    );
  }

  close(code = 1000, reason = ""): void {
    if (this.readyState !== 1) return;
    this.readyState = 2;
    // The writer's queue goes out before the stream ends (the Flare CLOSE frame with it).
    this.writer.close().then(
      () => this.transport.close({ closeCode: code === 1000 ? 0 : code, reason }),
      () => this.transport.close({ closeCode: 1, reason }),
    );
  }

  private async read(reader: ReadableStreamDefaultReader<Uint8Array>): Promise<void> {
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        const data = value.buffer.slice(value.byteOffset, value.byteOffset + value.byteLength);
        this.onmessage?.({ data: data as ArrayBuffer });
      }
      this.ended(1000);
    } catch {
      this.ended(1006);
    }
  }

  private ended(code: number): void {
    if (this.readyState === 3) return;
    this.readyState = 3;
    this.onclose?.({ code });
  }
}

/**
 * Open a WebTransport session at `url` with `token`, and its Flare stream.
 * Rejects with `ConnectionClosedError` when it fails, or after `timeoutMs`.
 */
export async function openWebTransport(
  url: string,
  token: string | undefined,
  options: WebTransportOptions,
  timeoutMs: number,
  signal?: AbortSignal,
): Promise<WebSocketLike> {
  const Constructor = (globalThis as { WebTransport?: typeof WebTransport }).WebTransport;
  if (Constructor === undefined) {
    throw new ConnectionClosedError("this runtime has no WebTransport (browsers only)");
  }
  const parsed = new URL(url);
  if (token !== undefined && token !== "") parsed.searchParams.set("access_token", token);
  const transport = new Constructor(parsed.href, options);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const onAbort = (): void => transport.close();
  signal?.addEventListener("abort", onAbort);
  try {
    const gaveUp = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        transport.close();
        reject(new ConnectionClosedError(`no WebTransport session within ${timeoutMs} ms`));
      }, timeoutMs);
    });
    await Promise.race([transport.ready, gaveUp]);
    const stream = await Promise.race([transport.createBidirectionalStream(), gaveUp]);
    return new WebTransportSocket(transport, stream);
  } catch (error) {
    if (error instanceof ConnectionClosedError) throw error;
    throw new ConnectionClosedError(`cannot open WebTransport to ${redact(parsed.href)}: ${String(error)}`);
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener("abort", onAbort);
  }
}
