/**
 * Flare's errors, one tree rooted at `FlareError` (as `flare_runtime/errors.py`):
 *
 *     FlareError
 *     ├── RpcError              a call failed: a StatusCode, a message, details, trailers
 *     ├── ProtocolError         the wire protocol was broken; the connection closes
 *     │   ├── LocalProtocolError    this side tried something the protocol forbids
 *     │   └── RemoteProtocolError   the peer sent something the protocol forbids
 *     └── ConnectionClosedError the connection is gone (carries the reason)
 *
 * Calls only ever reject with `RpcError`: a lost connection is UNAVAILABLE, an
 * aborted signal CANCELLED, a passed deadline DEADLINE_EXCEEDED.
 */
import { type DescMessage, type MessageShape, type Registry } from "@bufbuild/protobuf";
import { type Any, anyIs, anyUnpack } from "@bufbuild/protobuf/wkt";

import { decodeStatusDetails } from "./details.js";
import { Metadata } from "./metadata.js";
import { StatusCode, statusName } from "./status.js";

/** Root of every error Flare raises on purpose. */
export class FlareError extends Error {
  override name = "FlareError";
}

/**
 * A call ended with a non-OK status.
 *
 * `code` is one of gRPC's codes, `rawMessage` the server's message as sent,
 * `details` the `google.protobuf.Any` list of the `google.rpc.Status` the
 * server packed (the same bytes gRPC carries in `grpc-status-details-bin`),
 * `metadata` the call's trailers.
 */
export class RpcError extends FlareError {
  override name = "RpcError";
  readonly code: StatusCode;
  readonly rawMessage: string;
  readonly details: readonly Any[];
  readonly metadata: Metadata;

  constructor(
    code: StatusCode,
    message = "",
    details: readonly Any[] = [],
    metadata: Metadata = Metadata.EMPTY,
  ) {
    super(message ? `${statusName(code)}: ${message}` : statusName(code));
    this.code = code;
    this.rawMessage = message;
    this.details = details;
    this.metadata = metadata;
  }

  /** The error for an END_CALL / local failure: `details` are the serialized google.rpc.Status. */
  static fromWire(
    code: StatusCode,
    message: string,
    details: Uint8Array,
    trailers: Metadata = Metadata.EMPTY,
  ): RpcError {
    return new RpcError(code, message, decodeStatusDetails(details), trailers);
  }

  /** The details of type `schema`, unpacked (those of other types are skipped). */
  findDetails<Desc extends DescMessage>(schema: Desc): MessageShape<Desc>[] {
    const found: MessageShape<Desc>[] = [];
    for (const detail of this.details) {
      if (anyIs(detail, schema)) {
        const message = anyUnpack(detail, schema);
        if (message !== undefined) found.push(message);
      }
    }
    return found;
  }

  /** Every detail whose type `registry` knows, unpacked. */
  unpackDetails(registry: Registry): unknown[] {
    const out: unknown[] = [];
    for (const detail of this.details) {
      const message = anyUnpack(detail, registry);
      if (message !== undefined) out.push(message);
    }
    return out;
  }
}

/** The Flare wire protocol was violated; the connection is closed. */
export class ProtocolError extends FlareError {
  override name = "ProtocolError";
}

/** This side tried to do something the protocol forbids (a bug in Flare or its caller). */
export class LocalProtocolError extends ProtocolError {
  override name = "LocalProtocolError";
}

/** The peer sent something the protocol forbids. */
export class RemoteProtocolError extends ProtocolError {
  override name = "RemoteProtocolError";
}

/** The connection is closed; `reason` says why. */
export class ConnectionClosedError extends FlareError {
  override name = "ConnectionClosedError";
  readonly reason: string;

  constructor(reason = "") {
    super(reason || "connection closed");
    this.reason = reason;
  }
}
