/**
 * Flare frames: the fixed header, every frame type's payload layout, encoders
 * and decoders (docs/wire-format.md §2–§3; mirrors flare_runtime/protocol/frames.py).
 *
 * Every frame is a 10-byte header followed by its payload:
 *
 *     length   u32 big-endian   payload length (header not included)
 *     type     u8               FrameType
 *     flags    u8               END_STREAM 0x01, END_CALL 0x02
 *     call_id  u32 big-endian   the call (0 for connection frames; push type id for PUSH)
 *
 * Encoders return complete frames; `decode*Payload` read one payload from
 * `data[start, end)` and throw `RemoteProtocolError` on malformed input.
 * Encoders for the server's frames exist too, for tests and tools.
 */
import { RemoteProtocolError } from "../errors.js";
import { type MetadataValue, checkEntry } from "../metadata.js";

/** Size of the fixed frame header. */
export const HEADER_SIZE = 10;
/** First five payload bytes of every HELLO: "FLARE". */
export const MAGIC = new Uint8Array([0x46, 0x4c, 0x41, 0x52, 0x45]);
/** The protocol version this implementation speaks (§4). */
export const PROTOCOL_VERSION = 1;
/** On a client's MESSAGE or CALL_START: the client sends nothing more on the call. */
export const FLAG_END_STREAM = 0x01;
/** On a server's MESSAGE: the call ended OK with this message (the compact end, §3.4). */
export const FLAG_END_CALL = 0x02;
/** Largest call id (u32). */
export const MAX_CALL_ID = 0xffffffff;

/** Frame type numbers (§3). */
export enum FrameType {
  HELLO = 0x01,
  CALL_START = 0x02,
  HEADERS = 0x03,
  MESSAGE = 0x04,
  HALF_CLOSE = 0x05,
  END_CALL = 0x06,
  CANCEL = 0x07,
  WINDOW_UPDATE = 0x08,
  PUSH = 0x09,
  PING = 0x0a,
  PONG = 0x0b,
  GOAWAY = 0x0c,
  CLOSE = 0x0d,
}

/** Why a connection was closed: the code of a CLOSE frame (§8.1). */
export enum CloseCode {
  NO_ERROR = 0,
  PROTOCOL_ERROR = 1,
  INTERNAL_ERROR = 2,
  FLOW_CONTROL_ERROR = 3,
  FRAME_TOO_LARGE = 4,
  UNSUPPORTED_VERSION = 5,
  KEEPALIVE_TIMEOUT = 6,
}

/** Setting ids carried in HELLO (§4). Unknown ids are ignored. */
export enum SettingId {
  MAX_FRAME_SIZE = 1,
  MAX_MESSAGE_SIZE = 2,
  MAX_CONCURRENT_CALLS = 3,
  INITIAL_WINDOW_SIZE = 4,
  MAX_METADATA_SIZE = 5,
  COMPACT_CALLS = 6,
}

/** Metadata entries as they travel: ordered pairs. */
export type MetadataPairs = ReadonlyArray<readonly [string, MetadataValue]>;

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });
const EMPTY = new Uint8Array(0);

/** UTF-8 bytes of `text`. */
export function utf8(text: string): Uint8Array {
  return text.length === 0 ? EMPTY : encoder.encode(text);
}

function readUtf8(data: Uint8Array, start: number, end: number, what: string): string {
  if (start === end) return "";
  try {
    return decoder.decode(data.subarray(start, end));
  } catch {
    throw new RemoteProtocolError(`${what} is not valid UTF-8`);
  }
}

/** Concatenate byte arrays into one. */
export function concat(parts: readonly Uint8Array[]): Uint8Array {
  if (parts.length === 1) return parts[0]!;
  let size = 0;
  for (const part of parts) size += part.length;
  const out = new Uint8Array(size);
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

// ------------------------------------------------------------------ varints

/** Protobuf's base-128 varint, for 0 <= value < 2**32. */
export function encodeVarint(value: number): Uint8Array {
  if (value < 0x80) return new Uint8Array([value]);
  const out: number[] = [];
  while (value >= 0x80) {
    out.push((value & 0x7f) | 0x80);
    value = Math.floor(value / 128);
  }
  out.push(value);
  return new Uint8Array(out);
}

/** Read a varint at `pos` (before `end`); returns [value, position after it]. At most 5 bytes. */
export function decodeVarint(data: Uint8Array, pos: number, end: number): [number, number] {
  let value = 0;
  let factor = 1;
  for (let i = 0; i < 5; i++) {
    if (pos >= end) throw new RemoteProtocolError("truncated varint");
    const byte = data[pos++]!;
    value += (byte & 0x7f) * factor;
    if (byte < 0x80) {
      if (value > MAX_CALL_ID) throw new RemoteProtocolError("varint exceeds 32 bits");
      return [value, pos];
    }
    factor *= 128;
  }
  throw new RemoteProtocolError("varint longer than 5 bytes");
}

function packBytes(data: Uint8Array): Uint8Array[] {
  return [encodeVarint(data.length), data];
}

function readBytes(data: Uint8Array, pos: number, end: number): [number, number] {
  const [length, start] = decodeVarint(data, pos, end);
  const stop = start + length;
  if (stop > end) throw new RemoteProtocolError("length prefix runs past the end of the frame");
  return [start, stop];
}

// ------------------------------------------------------------------ metadata

/** The empty metadata block: the single byte 00. */
export const EMPTY_METADATA_BLOCK = new Uint8Array([0]);

/**
 * Encode a metadata block (§5.2): varint count, then each key and value
 * varint-prefixed. Throws `TypeError` for an invalid key or value.
 */
export function encodeMetadata(pairs: MetadataPairs): Uint8Array {
  if (pairs.length === 0) return EMPTY_METADATA_BLOCK;
  const parts: Uint8Array[] = [encodeVarint(pairs.length)];
  for (const [key, value] of pairs) {
    checkEntry(key, value);
    parts.push(...packBytes(utf8(key)));
    parts.push(...packBytes(typeof value === "string" ? utf8(value) : value));
  }
  return concat(parts);
}

/** Decode the metadata block at `pos`; returns [pairs, position after it]. */
export function decodeMetadataPrefix(
  data: Uint8Array,
  pos: number,
  end: number,
): [MetadataPairs, number] {
  const [count, afterCount] = decodeVarint(data, pos, end);
  pos = afterCount;
  // Each entry takes at least 3 bytes: a lying count costs nothing.
  if (count * 3 > end - pos) throw new RemoteProtocolError("metadata entry count exceeds the block");
  const pairs: Array<readonly [string, MetadataValue]> = [];
  for (let i = 0; i < count; i++) {
    const [keyStart, keyEnd] = readBytes(data, pos, end);
    const [valueStart, valueEnd] = readBytes(data, keyEnd, end);
    pos = valueEnd;
    if (keyStart === keyEnd) throw new RemoteProtocolError("invalid metadata key ''");
    for (let j = keyStart; j < keyEnd; j++) {
      if (data[j]! >= 0x80) throw new RemoteProtocolError("invalid metadata key (not ASCII)");
    }
    const key = String.fromCharCode(...data.subarray(keyStart, keyEnd));
    if (key.endsWith("-bin")) {
      pairs.push([key, data.slice(valueStart, valueEnd)]);
    } else {
      pairs.push([key, readUtf8(data, valueStart, valueEnd, `metadata value of '${key}'`)]);
    }
  }
  return [pairs, pos];
}

/** Decode the metadata block that fills `data[pos, end)` exactly. */
export function decodeMetadata(data: Uint8Array, pos: number, end: number): MetadataPairs {
  if (end - pos === 1 && data[pos] === 0) return [];
  const [pairs, after] = decodeMetadataPrefix(data, pos, end);
  if (after !== end) throw new RemoteProtocolError("trailing bytes after the metadata block");
  return pairs;
}

// ------------------------------------------------------------------ encoders

/** The 10-byte header. */
export function encodeHeader(
  length: number,
  type: FrameType,
  flags: number,
  callId: number,
): Uint8Array {
  const header = new Uint8Array(HEADER_SIZE);
  const view = new DataView(header.buffer);
  view.setUint32(0, length);
  header[4] = type;
  header[5] = flags;
  view.setUint32(6, callId);
  return header;
}

function frame(type: FrameType, flags: number, callId: number, parts: Uint8Array[]): Uint8Array {
  let length = 0;
  for (const part of parts) length += part.length;
  return concat([encodeHeader(length, type, flags, callId), ...parts]);
}

function u16(value: number): Uint8Array {
  return new Uint8Array([(value >>> 8) & 0xff, value & 0xff]);
}

function u32(value: number): Uint8Array {
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, value);
  return out;
}

/** HELLO: magic, the version range the sender speaks, its settings (§3.1). */
export function encodeHello(
  minVersion: number,
  maxVersion: number,
  settings: ReadonlyArray<readonly [number, number]>,
): Uint8Array {
  const parts = [MAGIC, u16(minVersion), u16(maxVersion)];
  for (const [id, value] of settings) parts.push(u16(id), u32(value));
  return frame(FrameType.HELLO, 0, 0, parts);
}

/**
 * CALL_START: route wire id, timeout in microseconds (0 = none), request
 * metadata. With `message`, the compact call start (§3.2): the request follows
 * the metadata and the client sends nothing more (flag END_STREAM).
 */
export function encodeCallStart(
  callId: number,
  routeId: number,
  timeoutUs: number,
  metadataBlock: Uint8Array,
  message?: Uint8Array,
): Uint8Array {
  const fixed = new Uint8Array(12);
  const view = new DataView(fixed.buffer);
  view.setUint32(0, routeId);
  view.setBigUint64(4, BigInt(timeoutUs));
  if (message === undefined) return frame(FrameType.CALL_START, 0, callId, [fixed, metadataBlock]);
  return frame(FrameType.CALL_START, FLAG_END_STREAM, callId, [fixed, metadataBlock, message]);
}

/** HEADERS: the server's response headers (§3.3). */
export function encodeHeaders(callId: number, pairs: MetadataPairs): Uint8Array {
  return frame(FrameType.HEADERS, 0, callId, [encodeMetadata(pairs)]);
}

/** MESSAGE: one serialized message; END_STREAM from the client, END_CALL from the server. */
export function encodeMessage(
  callId: number,
  data: Uint8Array,
  flags = 0,
): Uint8Array {
  return frame(FrameType.MESSAGE, flags, callId, [data]);
}

/** HALF_CLOSE: the client sends no more messages (§3.5). */
export function encodeHalfClose(callId: number): Uint8Array {
  return encodeHeader(0, FrameType.HALF_CLOSE, 0, callId);
}

/** END_CALL: status u8, varint-prefixed message and details, trailers block (§3.6). */
export function encodeEndCall(
  callId: number,
  status: number,
  message = "",
  details: Uint8Array = EMPTY,
  trailers: MetadataPairs = [],
): Uint8Array {
  return frame(FrameType.END_CALL, 0, callId, [
    new Uint8Array([status]),
    ...packBytes(utf8(message)),
    ...packBytes(details),
    encodeMetadata(trailers),
  ]);
}

/** CANCEL: status code u8 and a UTF-8 reason (§3.7). */
export function encodeCancel(callId: number, code: number, reason = ""): Uint8Array {
  return frame(FrameType.CANCEL, 0, callId, [new Uint8Array([code]), utf8(reason)]);
}

/** WINDOW_UPDATE: u32 credit increment (§6). */
export function encodeWindowUpdate(callId: number, increment: number): Uint8Array {
  return frame(FrameType.WINDOW_UPDATE, 0, callId, [u32(increment)]);
}

/** PUSH: a server-initiated message; the call-id field carries the push type id (§3.8). */
export function encodePush(typeId: number, data: Uint8Array): Uint8Array {
  return frame(FrameType.PUSH, 0, typeId, [data]);
}

/** PING: eight opaque bytes (§3.9). */
export function encodePing(data: Uint8Array): Uint8Array {
  return frame(FrameType.PING, 0, 0, [data]);
}

/** PONG: the eight bytes of the PING it answers (§3.9). */
export function encodePong(data: Uint8Array): Uint8Array {
  return frame(FrameType.PONG, 0, 0, [data]);
}

/** GOAWAY: the highest call id the server processes, and a reason (§3.10). */
export function encodeGoAway(lastCallId: number, reason = ""): Uint8Array {
  return frame(FrameType.GOAWAY, 0, 0, [u32(lastCallId), utf8(reason)]);
}

/** CLOSE: u16 close code and a UTF-8 reason; the last frame a side sends (§3.11). */
export function encodeClose(code: number, reason = ""): Uint8Array {
  return frame(FrameType.CLOSE, 0, 0, [u16(code), utf8(reason)]);
}

// ------------------------------------------------------------------ payload decoders

function view(data: Uint8Array): DataView {
  return new DataView(data.buffer, data.byteOffset, data.byteLength);
}

/** [minVersion, maxVersion, settings] of a HELLO payload. */
export function decodeHelloPayload(
  data: Uint8Array,
  start: number,
  end: number,
): [number, number, Array<[number, number]>] {
  if (end - start < 9 || (end - start - 9) % 6 !== 0) {
    throw new RemoteProtocolError("malformed HELLO payload");
  }
  for (let i = 0; i < 5; i++) {
    if (data[start + i] !== MAGIC[i]) {
      throw new RemoteProtocolError("HELLO does not start with the FLARE magic");
    }
  }
  const dv = view(data);
  const minVersion = dv.getUint16(start + 5);
  const maxVersion = dv.getUint16(start + 7);
  if (minVersion > maxVersion) throw new RemoteProtocolError("HELLO version range is empty");
  const settings: Array<[number, number]> = [];
  for (let offset = start + 9; offset < end; offset += 6) {
    settings.push([dv.getUint16(offset), dv.getUint32(offset + 2)]);
  }
  return [minVersion, maxVersion, settings];
}

/** What an END_CALL payload holds. */
export interface EndCallPayload {
  status: number;
  message: string;
  details: Uint8Array;
  trailers: MetadataPairs;
  /** Encoded size of the trailers block (for MAX_METADATA_SIZE). */
  trailersSize: number;
}

/** Decode an END_CALL payload (§3.6). */
export function decodeEndCallPayload(data: Uint8Array, start: number, end: number): EndCallPayload {
  if (end - start < 4) throw new RemoteProtocolError("truncated END_CALL payload");
  const status = data[start]!;
  const [messageStart, messageEnd] = readBytes(data, start + 1, end);
  const [detailsStart, detailsEnd] = readBytes(data, messageEnd, end);
  if (detailsEnd >= end) throw new RemoteProtocolError("truncated END_CALL payload");
  const message = readUtf8(data, messageStart, messageEnd, "status message");
  return {
    status,
    message,
    details: data.slice(detailsStart, detailsEnd),
    trailers: decodeMetadata(data, detailsEnd, end),
    trailersSize: end - detailsEnd,
  };
}

/** The credit increment of a WINDOW_UPDATE payload (1 .. 2**31-1). */
export function decodeWindowUpdatePayload(data: Uint8Array, start: number, end: number): number {
  if (end - start !== 4) throw new RemoteProtocolError("WINDOW_UPDATE payload must be 4 bytes");
  const increment = view(data).getUint32(start);
  if (increment === 0 || increment >= 2 ** 31) {
    throw new RemoteProtocolError(`WINDOW_UPDATE increment ${increment} out of range`);
  }
  return increment;
}

/** The eight bytes of a PING or PONG payload. */
export function decodePingPayload(data: Uint8Array, start: number, end: number): Uint8Array {
  if (end - start !== 8) throw new RemoteProtocolError("PING/PONG payload must be 8 bytes");
  return data.slice(start, end);
}

/** [lastCallId, reason] of a GOAWAY payload. */
export function decodeGoAwayPayload(
  data: Uint8Array,
  start: number,
  end: number,
): [number, string] {
  if (end - start < 4) throw new RemoteProtocolError("truncated GOAWAY payload");
  return [view(data).getUint32(start), readUtf8(data, start + 4, end, "GOAWAY reason")];
}

/** [code, reason] of a CLOSE payload. */
export function decodeClosePayload(data: Uint8Array, start: number, end: number): [number, string] {
  if (end - start < 2) throw new RemoteProtocolError("truncated CLOSE payload");
  return [view(data).getUint16(start), readUtf8(data, start + 2, end, "CLOSE reason")];
}

/** [code, reason] of a CANCEL payload. */
export function decodeCancelPayload(
  data: Uint8Array,
  start: number,
  end: number,
): [number, string] {
  if (end - start < 1) throw new RemoteProtocolError("truncated CANCEL payload");
  return [data[start]!, readUtf8(data, start + 1, end, "CANCEL reason")];
}
