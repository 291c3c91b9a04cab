/**
 * What the client `Connection` reports (mirrors flare_runtime/protocol/events.py,
 * client side). Each event is a small frozen object tagged by `kind`.
 */
import { type StatusCode } from "../status.js";
import { type CloseCode, type MetadataPairs } from "./frames.js";
import { type Settings } from "./config.js";

/** Both HELLOs were exchanged; `peerSettings` are the server's limits. */
export interface HandshakeCompleted {
  readonly kind: "handshake-completed";
  readonly version: number;
  readonly peerSettings: Settings;
}

/** The server's response headers of a call. */
export interface HeadersReceived {
  readonly kind: "headers-received";
  readonly callId: number;
  readonly metadata: MetadataPairs;
}

/** One response message; acknowledge its size once consumed (flow control). */
export interface MessageReceived {
  readonly kind: "message-received";
  readonly callId: number;
  readonly data: Uint8Array;
}

/**
 * The call is over: END_CALL from the server, or a local failure (`local`:
 * deadline passed, a limit broken, excluded by GOAWAY). `final` is the last
 * message when it came with the end (the compact end, §3.4).
 */
export interface CallEnded {
  readonly kind: "call-ended";
  readonly callId: number;
  readonly status: StatusCode;
  readonly message: string;
  readonly details: Uint8Array;
  readonly trailers: MetadataPairs;
  readonly local: boolean;
  readonly final: Uint8Array | undefined;
}

/** A server push of type `typeId`. */
export interface PushReceived {
  readonly kind: "push-received";
  readonly typeId: number;
  readonly data: Uint8Array;
}

/** The server pinged (the PONG is already queued). */
export interface PingReceived {
  readonly kind: "ping-received";
  readonly data: Uint8Array;
}

/** The server answered a PING. */
export interface PongReceived {
  readonly kind: "pong-received";
  readonly data: Uint8Array;
}

/** The server is draining: calls above `lastCallId` already ended UNAVAILABLE. */
export interface GoAwayReceived {
  readonly kind: "goaway-received";
  readonly lastCallId: number;
  readonly reason: string;
}

/** The call's send credit grew to `credit`: a blocked sender may go on. */
export interface WindowUpdated {
  readonly kind: "window-updated";
  readonly callId: number;
  readonly credit: number;
}

/** The connection is closed (CLOSE sent or received); every open call is gone. */
export interface ConnectionClosed {
  readonly kind: "connection-closed";
  readonly code: CloseCode;
  readonly reason: string;
  readonly byPeer: boolean;
}

/** Any event the client connection reports. */
export type Event =
  | HandshakeCompleted
  | HeadersReceived
  | MessageReceived
  | CallEnded
  | PushReceived
  | PingReceived
  | PongReceived
  | GoAwayReceived
  | WindowUpdated
  | ConnectionClosed;
