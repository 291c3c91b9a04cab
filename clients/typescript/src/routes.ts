/**
 * Route and push declarations, as generated clients spell them (the
 * TypeScript side of flare_runtime/routing.py's `Route` and `PushType`).
 * Generated code holds these declarations; behaviour lives in the runtime.
 */
import { type DescMessage } from "@bufbuild/protobuf";

/** How many messages flow each way. */
export type Cardinality = "unary" | "server_stream" | "client_stream" | "bidi_stream";

/** A transport a route is served on (docs/options/transports.md). */
export type TransportName = "websocket" | "quic" | "grpc";

/** A route's Flare options, resolved against its service's defaults. */
export interface RouteOptions {
  /** Safe to retry and to run in 0-RTT early data. */
  readonly idempotent: boolean;
  /** Whether the server requires an authenticated caller. */
  readonly auth: "none" | "authenticated";
  /** Scopes the caller's principal must hold. */
  readonly scopes: readonly string[];
  /** The timeout a call gets when the caller gives none (milliseconds), or undefined. */
  readonly defaultTimeoutMs: number | undefined;
  /** Where the route is served. */
  readonly transports: readonly TransportName[];
  /** The largest request or response the server accepts on this route, or undefined. */
  readonly maxMessageBytes: number | undefined;
  /** The schema marks the method deprecated. */
  readonly deprecated: boolean;
  readonly deprecationNote: string;
}

/** One method of a service: what a call needs to reach it and to (de)serialize. */
export interface Route<I extends DescMessage = DescMessage, O extends DescMessage = DescMessage> {
  /** The gRPC path, `/pkg.Service/Method`. */
  readonly path: string;
  readonly serviceId: number;
  readonly routeId: number;
  /** What CALL_START carries: `serviceId << 16 | routeId`, unsigned. */
  readonly wireId: number;
  readonly cardinality: Cardinality;
  readonly input: I;
  readonly output: O;
  readonly options: RouteOptions;
}

/** A message type the server may push, under its stable push type id. */
export interface PushType<D extends DescMessage = DescMessage> {
  readonly typeId: number;
  readonly schema: D;
}

/** Declare a push type (what generated `*_PUSH` constants are). */
export function pushType<D extends DescMessage>(typeId: number, schema: D): PushType<D> {
  if (!Number.isInteger(typeId) || typeId < 0 || typeId > 0xffffffff) {
    throw new RangeError(`push type id ${typeId} is not a u32`);
  }
  return Object.freeze({ typeId, schema });
}

/** Declare a route (what generated `*Routes` members are); checks the wire id. */
export function route<I extends DescMessage, O extends DescMessage>(spec: Route<I, O>): Route<I, O> {
  if (spec.wireId !== spec.serviceId * 65536 + spec.routeId) {
    throw new RangeError(`${spec.path}: wire id ${spec.wireId} is not serviceId << 16 | routeId`);
  }
  return Object.freeze({ ...spec, options: Object.freeze({ ...spec.options }) });
}
