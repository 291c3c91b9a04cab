/**
 * What a call looks like to the application: options, stream objects and the
 * `CallTransport` interface generated clients call through (implemented by
 * `FlareClient`, and by each connection it opens).
 */
import { type DescMessage, type MessageInitShape, type MessageShape } from "@bufbuild/protobuf";

import { type Metadata, type MetadataInit } from "./metadata.js";
import { type Route } from "./routes.js";

/** Per-call options (connect-web's names where they exist). */
export interface CallOptions {
  /** The call's timeout in milliseconds; the route's default applies when undefined. */
  readonly timeoutMs?: number | undefined;
  /** Aborting it cancels the call (CANCEL on the wire); the call rejects with CANCELLED. */
  readonly signal?: AbortSignal | undefined;
  /** Request metadata (call headers). */
  readonly headers?: MetadataInit | undefined;
  /** Called with the response headers when they arrive. */
  readonly onHeader?: ((headers: Metadata) => void) | undefined;
  /** Called with the trailers when the call ends (OK or not). */
  readonly onTrailer?: ((trailers: Metadata) => void) | undefined;
}

/**
 * A call whose server sends a stream: iterate it with `for await` (once). The
 * iteration ends when the call ends OK and throws `RpcError` otherwise; leaving
 * the loop early (break, throw) cancels the call.
 */
export interface ServerStream<O> extends AsyncIterable<O> {
  /** The response headers (empty when the server sent none). */
  headers(): Promise<Metadata>;
  /** The trailers, once the call has ended. */
  readonly trailers: Metadata;
  /** Cancel the call (CANCEL on the wire); iteration then throws CANCELLED. Idempotent. */
  cancel(reason?: string): void;
}

/** A bidirectional stream: send requests while iterating responses. */
export interface BidiStream<I, O> extends ServerStream<O> {
  /**
   * Send one request; resolves once it is queued (waiting for flow-control
   * credit when the server has not consumed earlier ones). Rejects with the
   * call's `RpcError` when it already ended.
   */
  send(request: I): Promise<void>;
  /** Send no more requests (HALF_CLOSE). Idempotent. */
  closeSend(): Promise<void>;
}

/** Requests of a client-streaming call: any iterable, sync or async. */
export type RequestStream<I extends DescMessage> =
  | AsyncIterable<MessageInitShape<I>>
  | Iterable<MessageInitShape<I>>;

/** The four call shapes; generated clients call through this. */
export interface CallTransport {
  unary<I extends DescMessage, O extends DescMessage>(
    route: Route<I, O>,
    request: MessageInitShape<I>,
    options?: CallOptions,
  ): Promise<MessageShape<O>>;
  serverStream<I extends DescMessage, O extends DescMessage>(
    route: Route<I, O>,
    request: MessageInitShape<I>,
    options?: CallOptions,
  ): ServerStream<MessageShape<O>>;
  clientStream<I extends DescMessage, O extends DescMessage>(
    route: Route<I, O>,
    requests: RequestStream<I>,
    options?: CallOptions,
  ): Promise<MessageShape<O>>;
  bidiStream<I extends DescMessage, O extends DescMessage>(
    route: Route<I, O>,
    options?: CallOptions,
  ): BidiStream<MessageInitShape<I>, MessageShape<O>>;
}
