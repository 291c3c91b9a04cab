// A small browser client of the Flare wire protocol (docs/wire-format.md) over
// WebSocket, with just enough protobuf to speak the flare.im.v1 API.
// No dependencies. Unary calls only (plus server pushes), which is all a chat
// page needs; the server's event pushes replace a Subscribe stream.
"use strict";

// ---------------------------------------------------------------- protobuf ---
// A schema maps field number -> [name, type, repeated?]; a type is one of
// "string", "bytes", "bool", "uint" (varint, up to 2^53) or a nested schema.

const enc = new TextEncoder();
const dec = new TextDecoder();

function writeVarint(out, value) {
  let v = Number(value);
  while (v > 0x7f) {
    out.push((v % 128) | 0x80);
    v = Math.floor(v / 128);
  }
  out.push(v);
}

function encodeMessage(schema, object) {
  const out = [];
  for (const [number, [name, type, repeated]] of Object.entries(schema)) {
    let values = object[name];
    if (values === undefined || values === null) continue;
    if (!repeated) values = [values];
    for (const value of values) {
      if (type === "uint" || type === "bool") {
        const n = type === "bool" ? (value ? 1 : 0) : value;
        if (!repeated && !n) continue;
        writeVarint(out, (Number(number) << 3) | 0);
        writeVarint(out, n);
      } else {
        let bytes;
        if (type === "string") bytes = enc.encode(value);
        else if (type === "bytes") bytes = value;
        else bytes = encodeMessage(type, value);
        if (!repeated && type === "string" && bytes.length === 0) continue;
        writeVarint(out, (Number(number) << 3) | 2);
        writeVarint(out, bytes.length);
        for (const b of bytes) out.push(b);
      }
    }
  }
  return Uint8Array.from(out);
}

function decodeMessage(schema, bytes) {
  const object = {};
  for (const [, [name, type, repeated]] of Object.entries(schema)) {
    if (repeated) object[name] = [];
    else if (type === "string") object[name] = "";
    else if (type === "uint") object[name] = 0;
    else if (type === "bool") object[name] = false;
  }
  let pos = 0;
  const varint = () => {
    let result = 0, scale = 1, byte;
    do {
      if (pos >= bytes.length) throw new Error("truncated varint");
      byte = bytes[pos++];
      result += (byte & 0x7f) * scale;
      scale *= 128;
    } while (byte & 0x80);
    return result;
  };
  while (pos < bytes.length) {
    const key = varint();
    const number = Math.floor(key / 8), wire = key & 7;
    const field = schema[number];
    let value;
    if (wire === 0) value = varint();
    else if (wire === 2) {
      const length = varint();
      value = bytes.subarray(pos, pos + length);
      pos += length;
    } else if (wire === 1) { pos += 8; continue; }
    else if (wire === 5) { pos += 4; continue; }
    else throw new Error("unsupported wire type " + wire);
    if (!field) continue;  // unknown field: skip, as protobuf does
    const [name, type, repeated] = field;
    if (type === "string") value = dec.decode(value);
    else if (type === "bool") value = value !== 0;
    else if (typeof type === "object") value = decodeMessage(type, value);
    if (repeated) object[name].push(value);
    else object[name] = value;
  }
  return object;
}

// ------------------------------------------------------------ flare.im.v1 ---
const S = {};
S.TextContent = { 1: ["text", "string"] };
S.Content = { 1: ["text", S.TextContent] };
S.Message = {
  1: ["conversation_id", "string"], 2: ["seq", "uint"], 3: ["epoch", "uint"],
  4: ["message_id", "string"], 5: ["sender_user_id", "string"],
  6: ["sender_device_id", "string"], 7: ["client_message_id", "string"],
  8: ["sent_at_ms", "uint"], 9: ["content", S.Content],
};
S.LoginRequest = { 1: ["device_id", "string"], 2: ["platform", "uint"] };
S.LoginReply = { 1: ["session_id", "string"], 2: ["user_id", "string"], 3: ["server_time_ms", "uint"] };
S.SendRequest = { 1: ["conversation_id", "string"], 2: ["client_message_id", "string"], 3: ["content", S.Content] };
S.SendReply = { 1: ["message_id", "string"], 2: ["seq", "uint"], 3: ["epoch", "uint"], 4: ["sent_at_ms", "uint"], 5: ["duplicate", "bool"] };
S.SyncCursor = { 1: ["conversation_id", "string"], 2: ["epoch", "uint"], 3: ["last_seq", "uint"] };
S.SyncRequest = { 1: ["cursors", S.SyncCursor, true], 2: ["limit", "uint"] };
S.ConversationSync = {
  1: ["conversation_id", "string"], 2: ["status", "uint"], 3: ["epoch", "uint"],
  4: ["messages", S.Message, true], 5: ["has_more", "bool"], 6: ["first_seq", "uint"],
  7: ["last_seq", "uint"], 8: ["resync_reason", "string"],
};
S.SyncReply = { 1: ["conversations", S.ConversationSync, true] };
S.Member = { 1: ["user_id", "string"], 2: ["role", "uint"] };
S.ConversationInfo = {
  1: ["conversation_id", "string"], 3: ["title", "string"], 6: ["epoch", "uint"],
  8: ["last_seq", "uint"], 9: ["members", S.Member, true],
};
S.JoinRoomRequest = { 1: ["conversation_id", "string"] };
S.SetTypingRequest = { 1: ["conversation_id", "string"], 2: ["typing", "bool"] };
S.Empty = {};
S.GetOnlineMembersRequest = { 1: ["conversation_id", "string"] };
S.GetOnlineMembersReply = { 1: ["user_ids", "string", true] };
S.MessageReceived = { 1: ["message", S.Message] };
S.TypingChanged = { 1: ["conversation_id", "string"], 2: ["user_id", "string"], 3: ["device_id", "string"], 4: ["typing", "bool"] };
S.PresenceChanged = { 1: ["user_id", "string"], 2: ["online", "bool"], 3: ["changed_at_ms", "uint"] };
S.MembershipChanged = { 1: ["conversation_id", "string"], 2: ["user_id", "string"], 3: ["change", "uint"], 4: ["role", "uint"], 5: ["actor_user_id", "string"] };
S.SessionClosed = { 1: ["reason", "uint"], 2: ["detail", "string"], 3: ["replaced_by_session_id", "string"] };
S.ReceiptUpdated = { 1: ["conversation_id", "string"], 2: ["user_id", "string"], 3: ["delivered_seq", "uint"], 4: ["read_seq", "uint"], 5: ["unread_count", "uint"] };

const SERVICE_ID = 64000;
// Route: [route id within the service, request schema, response schema].
const ROUTES = {
  login: [1, S.LoginRequest, S.LoginReply],
  send: [3, S.SendRequest, S.SendReply],
  sync: [4, S.SyncRequest, S.SyncReply],
  setTyping: [8, S.SetTypingRequest, S.Empty],
  getOnlineMembers: [10, S.GetOnlineMembersRequest, S.GetOnlineMembersReply],
  joinRoom: [13, S.JoinRoomRequest, S.ConversationInfo],
};
// Push type id -> [event name, schema] (events.proto).
const PUSHES = {
  64001: ["messageReceived", S.MessageReceived],
  64002: ["receiptUpdated", S.ReceiptUpdated],
  64003: ["typingChanged", S.TypingChanged],
  64004: ["presenceChanged", S.PresenceChanged],
  64005: ["membershipChanged", S.MembershipChanged],
  64006: ["sessionClosed", S.SessionClosed],
};

// ----------------------------------------------------------- wire protocol ---
const FRAME = { HELLO: 1, CALL_START: 2, HEADERS: 3, MESSAGE: 4, END_CALL: 6, PUSH: 9, PING: 10, PONG: 11, GOAWAY: 12, CLOSE: 13 };
const END_STREAM = 1;
const STATUS_NAMES = ["OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"];

function frame(type, flags, callId, payload) {
  const out = new Uint8Array(10 + payload.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, payload.length);
  out[4] = type;
  out[5] = flags;
  view.setUint32(6, callId);
  out.set(payload, 10);
  return out;
}

class RpcError extends Error {
  constructor(code, message) {
    super((STATUS_NAMES[code] || "UNKNOWN") + (message ? ": " + message : ""));
    this.code = code;
    this.codeName = STATUS_NAMES[code] || "UNKNOWN";
  }
}

class FlareImClient {
  // Connect to `url` (ws://host:port) as the holder of `token`. Resolves once open.
  static connect(url, token) {
    const client = new FlareImClient(url + "/?access_token=" + encodeURIComponent(token));
    return client._opened.then(() => client);
  }

  constructor(url) {
    this.listeners = {};
    this.calls = new Map();
    this.nextCallId = 1;
    this.buffer = new Uint8Array(0);
    this.closed = false;
    this.socket = new WebSocket(url);
    this.socket.binaryType = "arraybuffer";
    this._opened = new Promise((resolve, reject) => {
      this.socket.onopen = () => {
        // HELLO: magic, min and max version 1, no settings (defaults).
        const hello = new Uint8Array([0x46, 0x4c, 0x41, 0x52, 0x45, 0, 1, 0, 1]);
        this.socket.send(frame(FRAME.HELLO, 0, 0, hello));
        resolve();
      };
      this.socket.onerror = () => reject(new Error("cannot connect to " + url));
    });
    this.socket.onmessage = (event) => this._receive(new Uint8Array(event.data));
    this.socket.onclose = (event) => this._closedBy(event.reason || "connection closed");
  }

  on(name, callback) { (this.listeners[name] = this.listeners[name] || []).push(callback); }
  _emit(name, value) { for (const callback of this.listeners[name] || []) callback(value); }

  // Unary call of the IM route `name` with a plain-object request.
  call(name, request, timeoutMs = 10000) {
    const [routeId, requestSchema, responseSchema] = ROUTES[name];
    if (this.closed) return Promise.reject(new RpcError(14, "connection closed"));
    const callId = this.nextCallId++;
    const start = new Uint8Array(4 + 8 + 1);
    const view = new DataView(start.buffer);
    view.setUint32(0, SERVICE_ID * 65536 + routeId);
    view.setUint32(4, 0);
    view.setUint32(8, timeoutMs * 1000);
    start[12] = 0;  // empty metadata block
    const body = encodeMessage(requestSchema, request);
    const both = new Uint8Array(10 + start.length + 10 + body.length);
    both.set(frame(FRAME.CALL_START, 0, callId, start), 0);
    both.set(frame(FRAME.MESSAGE, END_STREAM, callId, body), 10 + start.length);
    return new Promise((resolve, reject) => {
      this.calls.set(callId, { resolve, reject, schema: responseSchema, response: null });
      this.socket.send(both);
    });
  }

  close() { this.socket.close(); }

  _receive(chunk) {
    const joined = new Uint8Array(this.buffer.length + chunk.length);
    joined.set(this.buffer, 0);
    joined.set(chunk, this.buffer.length);
    let pos = 0;
    while (joined.length - pos >= 10) {
      const view = new DataView(joined.buffer, joined.byteOffset + pos);
      const length = view.getUint32(0), type = joined[pos + 4], id = view.getUint32(6);
      if (joined.length - pos < 10 + length) break;
      this._frame(type, id, joined.subarray(pos + 10, pos + 10 + length));
      pos += 10 + length;
    }
    this.buffer = joined.slice(pos);
  }

  _frame(type, id, payload) {
    if (type === FRAME.MESSAGE) {
      const call = this.calls.get(id);
      if (call) call.response = decodeMessage(call.schema, payload);
    } else if (type === FRAME.END_CALL) {
      const call = this.calls.get(id);
      if (!call) return;
      this.calls.delete(id);
      const status = payload[0];
      let pos = 1, length = 0, scale = 1, byte;
      do { byte = payload[pos++]; length += (byte & 0x7f) * scale; scale *= 128; } while (byte & 0x80);
      const message = dec.decode(payload.subarray(pos, pos + length));
      if (status === 0) call.resolve(call.response || decodeMessage(call.schema, new Uint8Array(0)));
      else call.reject(new RpcError(status, message));
    } else if (type === FRAME.PUSH) {
      const known = PUSHES[id];
      if (known) this._emit(known[0], decodeMessage(known[1], payload));
    } else if (type === FRAME.PING) {
      this.socket.send(frame(FRAME.PONG, 0, 0, payload));
    } else if (type === FRAME.CLOSE) {
      this._closedBy(dec.decode(payload.subarray(2)) || "closed by the server");
    }
  }

  _closedBy(reason) {
    if (this.closed) return;
    this.closed = true;
    for (const call of this.calls.values()) call.reject(new RpcError(14, reason));
    this.calls.clear();
    this._emit("closed", reason);
  }
}

window.FlareImClient = FlareImClient;
window.FlareRpcError = RpcError;
