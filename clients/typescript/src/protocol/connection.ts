/**
 * `Connection`: the client end of a Flare connection, sans-I/O
 * (docs/wire-format.md; the TypeScript twin of flare_runtime/protocol/connection.py,
 * client role only).
 *
 * Feed it the bytes the transport received and the current time; it reports
 * events and queues the bytes to send. It never reads a clock, opens a socket
 * or sets a timer: the transport shell does all I/O.
 *
 *     const conn = new Connection(config, now());
 *     socket.send(conn.dataToSend());                 // the client's HELLO
 *     conn.receiveData(chunk, now());                 // any chunking
 *     for (const event of conn.eventsReceived()) ...
 *     socket.send(conn.dataToSend());                 // after any batch of calls
 *     const when = conn.getTimer();                   // one timer per connection
 *     conn.handleTimer(now());                        // when it fires
 *
 * Times are milliseconds on the caller's clock. Input that breaks the protocol
 * never throws: it queues a CLOSE frame and reports `connection-closed`.
 * Misuse by the application throws `LocalProtocolError`.
 */
import { ConnectionClosedError, LocalProtocolError, RemoteProtocolError } from "../errors.js";
import { StatusCode, statusFromWire } from "../status.js";
import {
  DEFAULT_CONFIG,
  MAX_WINDOW,
  MIN_INITIAL_WINDOW_SIZE,
  MIN_MAX_FRAME_SIZE,
  type ProtocolConfig,
  type Settings,
  DEFAULT_SETTINGS,
} from "./config.js";
import { type CallEnded, type Event } from "./events.js";
import {
  CloseCode,
  EMPTY_METADATA_BLOCK,
  FLAG_END_CALL,
  FLAG_END_STREAM,
  FrameType,
  HEADER_SIZE,
  MAX_CALL_ID,
  type MetadataPairs,
  PROTOCOL_VERSION,
  SettingId,
  concat,
  decodeClosePayload,
  decodeEndCallPayload,
  decodeGoAwayPayload,
  decodeHelloPayload,
  decodeMetadata,
  decodePingPayload,
  decodeWindowUpdatePayload,
  encodeCallStart,
  encodeCancel,
  encodeClose,
  encodeHalfClose,
  encodeHeader,
  encodeHello,
  encodeMetadata,
  encodePing,
  encodePong,
  encodeWindowUpdate,
} from "./frames.js";
import { CallInput, CallState, TRANSITIONS } from "./state.js";

/** The call has no send credit: wait for `window-updated`, then send again (§6). */
export class FlowControlBlockedError extends LocalProtocolError {
  override name = "FlowControlBlockedError";
}

/** What we tried to send exceeds a limit the server announced; nothing was queued. */
export class LimitExceededError extends LocalProtocolError {
  override name = "LimitExceededError";
}

/** Largest timeout CALL_START's u64 microseconds carries exactly in a JS number. */
const MAX_TIMEOUT_MS = Number.MAX_SAFE_INTEGER / 1000;
const EMPTY = new Uint8Array(0);

class Call {
  state: number = CallState.OPEN;
  /** Received, not yet acknowledged by the application. */
  buffered = 0;
  /** Acknowledged, not yet announced in a WINDOW_UPDATE. */
  pendingAck = 0;
  constructor(
    public sendCredit: number,
    public recvCredit: number,
    public deadline: number | undefined,
  ) {}
}

/** A min-heap of [deadline, callId]: the earliest deadline first. */
class DeadlineHeap {
  private readonly items: Array<[number, number]> = [];
  get size(): number {
    return this.items.length;
  }
  peek(): [number, number] | undefined {
    return this.items[0];
  }
  push(item: [number, number]): void {
    const items = this.items;
    items.push(item);
    let i = items.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (items[parent]![0] <= item[0]) break;
      items[i] = items[parent]!;
      i = parent;
    }
    items[i] = item;
  }
  pop(): [number, number] | undefined {
    const items = this.items;
    const top = items[0];
    const last = items.pop();
    if (top === undefined || last === undefined || items.length === 0) return top;
    let i = 0;
    for (;;) {
      const left = 2 * i + 1;
      if (left >= items.length) break;
      const right = left + 1;
      const child = right < items.length && items[right]![0] < items[left]![0] ? right : left;
      if (items[child]![0] >= last[0]) break;
      items[i] = items[child]!;
      i = child;
    }
    items[i] = last;
    return top;
  }
  clear(): void {
    this.items.length = 0;
  }
}

function settingsPairs(settings: Settings): Array<[number, number]> {
  return [
    [SettingId.MAX_FRAME_SIZE, settings.maxFrameSize],
    [SettingId.MAX_MESSAGE_SIZE, settings.maxMessageSize],
    [SettingId.MAX_CONCURRENT_CALLS, settings.maxConcurrentCalls],
    [SettingId.INITIAL_WINDOW_SIZE, settings.initialWindowSize],
    [SettingId.MAX_METADATA_SIZE, settings.maxMetadataSize],
    [SettingId.COMPACT_CALLS, settings.compactCalls ? 1 : 0],
  ];
}

/** The server's settings from its HELLO: unknown ids ignored, missing ones default (§4). */
export function settingsFromPairs(pairs: ReadonlyArray<readonly [number, number]>): Settings {
  const values = new Map<number, number>(settingsPairs(DEFAULT_SETTINGS));
  values.set(SettingId.COMPACT_CALLS, 0); // only a peer that announces it accepts them
  for (const [id, value] of pairs) if (values.has(id)) values.set(id, value);
  const window = values.get(SettingId.INITIAL_WINDOW_SIZE)!;
  if (window < MIN_INITIAL_WINDOW_SIZE || window > MAX_WINDOW) {
    throw new RemoteProtocolError(`INITIAL_WINDOW_SIZE ${window} out of range`);
  }
  if (values.get(SettingId.MAX_FRAME_SIZE)! < MIN_MAX_FRAME_SIZE) {
    throw new RemoteProtocolError("MAX_FRAME_SIZE below the minimum 16384");
  }
  for (const id of [
    SettingId.MAX_MESSAGE_SIZE,
    SettingId.MAX_CONCURRENT_CALLS,
    SettingId.MAX_METADATA_SIZE,
  ]) {
    if (values.get(id) === 0) throw new RemoteProtocolError(`${SettingId[id]} must not be 0`);
  }
  const compact = values.get(SettingId.COMPACT_CALLS)!;
  if (compact > 1) throw new RemoteProtocolError(`COMPACT_CALLS ${compact} out of range`);
  return Object.freeze({
    maxFrameSize: values.get(SettingId.MAX_FRAME_SIZE)!,
    maxMessageSize: values.get(SettingId.MAX_MESSAGE_SIZE)!,
    maxConcurrentCalls: values.get(SettingId.MAX_CONCURRENT_CALLS)!,
    initialWindowSize: window,
    maxMetadataSize: values.get(SettingId.MAX_METADATA_SIZE)!,
    compactCalls: compact === 1,
  });
}

/** Options of `Connection.startCall`. */
export interface StartCallOptions {
  /** The call's timeout in milliseconds from `now`; undefined for none. */
  readonly timeoutMs?: number | undefined;
  /** The current time (needed with a timeout). */
  readonly now?: number;
  /** The first request message, sent in the same batch. */
  readonly message?: Uint8Array | undefined;
  /** Half-close after `message` (or at once without one). */
  readonly endStream?: boolean;
}

/** The client end of a Flare connection (docs/wire-format.md). */
export class Connection {
  readonly config: ProtocolConfig;
  readonly settings: Settings;
  /**
   * The server's settings. Until its HELLO arrives, the defaults with the
   * smallest window it may announce and no compact frames (§6).
   */
  peerSettings: Settings = Object.freeze({
    ...DEFAULT_SETTINGS,
    initialWindowSize: MIN_INITIAL_WINDOW_SIZE,
    compactCalls: false,
  });
  /** The agreed version once the handshake completed, else undefined. */
  version: number | undefined;

  private readonly calls = new Map<number, Call>();
  private lastCallId = 0;
  private out: Uint8Array[] = [];
  private events: Event[] = [];
  /** An incomplete frame's chunks, kept until `needed` bytes are there (no quadratic copies). */
  private pending: Uint8Array[] = [];
  private pendingSize = 0;
  private needed = 0;
  private skip = 0;
  private bufferedTotal = 0;
  private readonly deadlines = new DeadlineHeap();
  private lastReceived: number;
  private pingDeadline: number | undefined;
  private pingCounter = 0;
  private helloDeadline: number | undefined;
  private goAwayLast: number | undefined;
  private isClosed = false;
  private readonly ackThreshold: number;

  /** Start the client end: its HELLO is queued at once (send `dataToSend()`). */
  constructor(config: ProtocolConfig = DEFAULT_CONFIG, now = 0) {
    this.config = config;
    this.settings = config.settings;
    this.lastReceived = now;
    this.helloDeadline = now + config.handshakeTimeoutMs;
    this.ackThreshold = Math.max(
      1,
      Math.floor(config.settings.initialWindowSize * config.windowUpdateRatio),
    );
    this.out.push(encodeHello(PROTOCOL_VERSION, PROTOCOL_VERSION, settingsPairs(this.settings)));
  }

  // ---------------------------------------------------------------- properties

  /** True once both HELLOs were exchanged. */
  get established(): boolean {
    return this.version !== undefined;
  }

  /** True once CLOSE was sent or received. */
  get closed(): boolean {
    return this.isClosed;
  }

  /** True once the server sent GOAWAY: start no more calls here. */
  get goingAway(): boolean {
    return this.goAwayLast !== undefined;
  }

  /** Calls not yet ended. */
  get openCalls(): number {
    return this.calls.size;
  }

  /** True when `dataToSend()` would return bytes. */
  get hasDataToSend(): boolean {
    return this.out.length > 0;
  }

  /** Send credit left on `callId`: a message may be sent while it is > 0 (§6). */
  availableCredit(callId: number): number {
    return this.calls.get(callId)?.sendCredit ?? 0;
  }

  /** The state of `callId`, or undefined once it ended. */
  callState(callId: number): CallState | undefined {
    const call = this.calls.get(callId);
    return call === undefined ? undefined : (call.state as CallState);
  }

  // ---------------------------------------------------------------- I/O

  /** Process bytes from the server (any chunking); then read `eventsReceived()`. */
  receiveData(chunk: Uint8Array, now: number): void {
    if (this.isClosed) return;
    this.lastReceived = now;
    this.pingDeadline = undefined; // any input proves the peer is alive
    let data = chunk;
    if (this.skip > 0) {
      const skipped = Math.min(this.skip, data.length);
      this.skip -= skipped;
      data = data.subarray(skipped);
    }
    if (this.pending.length > 0) {
      if (data.length === 0) return;
      this.pending.push(data);
      this.pendingSize += data.length;
      if (this.pendingSize < this.needed) return;
      data = concat(this.pending);
      this.pending = [];
      this.pendingSize = 0;
    }
    if (data.length === 0) return;
    try {
      this.parse(data, now);
    } catch (error) {
      if (!(error instanceof RemoteProtocolError)) throw error;
      this.fail(CloseCode.PROTOCOL_ERROR, error.message);
    }
  }

  /** Return and forget the events reported since the last call, in order. */
  eventsReceived(): Event[] {
    const events = this.events;
    this.events = [];
    return events;
  }

  /** Return and forget every byte queued since the last call (empty when nothing is). */
  dataToSend(): Uint8Array {
    const out = this.out;
    if (out.length === 0) return EMPTY;
    this.out = [];
    return concat(out);
  }

  /**
   * When `handleTimer` must next run (on the `now` clock), or undefined.
   * Covers the handshake timeout, keepalive and every call deadline.
   */
  getTimer(): number | undefined {
    if (this.isClosed) return undefined;
    let when = this.helloDeadline;
    const interval = this.config.keepaliveIntervalMs;
    if (interval !== null && this.version !== undefined) {
      const keepalive = this.pingDeadline ?? this.lastReceived + interval;
      if (when === undefined || keepalive < when) when = keepalive;
    }
    for (let top = this.deadlines.peek(); top !== undefined; top = this.deadlines.peek()) {
      const [deadline, callId] = top;
      if (this.calls.get(callId)?.deadline === deadline) {
        if (when === undefined || deadline < when) when = deadline;
        break;
      }
      this.deadlines.pop(); // the call ended before its deadline
    }
    return when;
  }

  /** Run whatever is due at `now`: handshake timeout, keepalive, call deadlines. */
  handleTimer(now: number): void {
    if (this.isClosed) return;
    if (this.helloDeadline !== undefined && now >= this.helloDeadline) {
      this.fail(CloseCode.PROTOCOL_ERROR, "no HELLO within the handshake timeout");
      return;
    }
    const interval = this.config.keepaliveIntervalMs;
    if (interval !== null && this.version !== undefined) {
      if (this.pingDeadline !== undefined) {
        if (now >= this.pingDeadline) {
          this.fail(CloseCode.KEEPALIVE_TIMEOUT, "no PONG within the keepalive timeout");
          return;
        }
      } else if (now >= this.lastReceived + interval) {
        this.pingCounter += 1;
        const data = new Uint8Array(8);
        new DataView(data.buffer).setUint32(4, this.pingCounter);
        this.out.push(encodePing(data));
        this.pingDeadline = now + this.config.keepaliveTimeoutMs;
      }
    }
    for (let top = this.deadlines.peek(); top !== undefined && top[0] <= now; top = this.deadlines.peek()) {
      this.deadlines.pop();
      const [deadline, callId] = top;
      const call = this.calls.get(callId);
      if (call === undefined || call.deadline !== deadline) continue;
      this.forget(callId, call);
      this.out.push(encodeCancel(callId, StatusCode.DEADLINE_EXCEEDED, "deadline exceeded"));
      this.events.push(callEnded(callId, StatusCode.DEADLINE_EXCEEDED, "deadline exceeded", true));
    }
  }

  // ---------------------------------------------------------------- calls

  /**
   * Open a call on route `routeId` (the wire id, `service_id << 16 | route_id`);
   * return its call id. May be called before the handshake completes.
   * Throws `LimitExceededError` when the message or metadata is larger than the
   * server accepts, `LocalProtocolError` after GOAWAY, `ConnectionClosedError`
   * once closed, `RangeError` for a bad route id or timeout; nothing is queued then.
   */
  startCall(routeId: number, metadata: MetadataPairs = [], options: StartCallOptions = {}): number {
    if (this.isClosed) throw new ConnectionClosedError("the Flare connection is closed");
    if (this.goAwayLast !== undefined) {
      throw new LocalProtocolError("the server sent GOAWAY: open a new connection");
    }
    const callId = this.lastCallId + 1;
    if (callId > MAX_CALL_ID) throw new LocalProtocolError("call ids exhausted: open a new connection");
    if (!Number.isInteger(routeId) || routeId < 0 || routeId > MAX_CALL_ID) {
      throw new RangeError(`route id ${routeId} does not fit 32 bits`);
    }
    const peer = this.peerSettings;
    const { message, endStream = false, timeoutMs, now = 0 } = options;
    if (message !== undefined && message.length > peer.maxMessageSize) {
      throw new LimitExceededError(
        `message of ${message.length} bytes exceeds the server's max_message_size (${peer.maxMessageSize})`,
      );
    }
    const block = metadata.length > 0 ? encodeMetadata(metadata) : EMPTY_METADATA_BLOCK;
    if (block.length > peer.maxMetadataSize) {
      throw new LimitExceededError(
        `metadata of ${block.length} bytes exceeds the server's max_metadata_size (${peer.maxMetadataSize})`,
      );
    }
    let deadline: number | undefined;
    let timeoutUs = 0;
    if (timeoutMs !== undefined) {
      if (!(timeoutMs >= 0 && timeoutMs < MAX_TIMEOUT_MS)) {
        throw new RangeError(`timeout ${timeoutMs} ms is not a finite, non-negative number`);
      }
      timeoutUs = Math.max(1, Math.round(timeoutMs * 1000));
      deadline = now + timeoutMs;
    }
    this.lastCallId = callId;
    const call = new Call(peer.initialWindowSize, this.settings.initialWindowSize, deadline);
    this.calls.set(callId, call);
    if (deadline !== undefined) this.pushDeadline(deadline, callId);
    if (
      endStream &&
      message !== undefined &&
      peer.compactCalls &&
      12 + block.length + message.length <= peer.maxFrameSize
    ) {
      // The compact call start (§3.2): the request rides in CALL_START.
      this.out.push(encodeCallStart(callId, routeId, timeoutUs, block, message));
      call.sendCredit -= message.length;
      call.state = CallState.HALF_CLOSED;
      return callId;
    }
    this.out.push(encodeCallStart(callId, routeId, timeoutUs, block));
    if (message !== undefined) this.sendMessage(callId, message, endStream);
    else if (endStream) this.halfClose(callId);
    return callId;
  }

  /**
   * Send one serialized message on `callId`; return the send credit left.
   * `endStream` half-closes after it. Throws `FlowControlBlockedError` without
   * credit, `LimitExceededError` over the server's max_message_size. Sending on
   * a call that already ended does nothing and returns 0.
   */
  sendMessage(callId: number, data: Uint8Array, endStream = false): number {
    const call = this.calls.get(callId);
    if (call === undefined) {
      this.checkKnownCall(callId);
      return 0;
    }
    const input = endStream ? CallInput.CLIENT_MESSAGE_END : CallInput.CLIENT_MESSAGE;
    const state = this.transition(call, input, callId, true);
    if (data.length > this.peerSettings.maxMessageSize) {
      throw new LimitExceededError(
        `message of ${data.length} bytes exceeds the server's max_message_size (${this.peerSettings.maxMessageSize})`,
      );
    }
    if (call.sendCredit <= 0) {
      throw new FlowControlBlockedError(`call ${callId} has no send credit; wait for window-updated`);
    }
    call.state = state;
    call.sendCredit -= data.length;
    this.out.push(encodeHeader(data.length, FrameType.MESSAGE, endStream ? FLAG_END_STREAM : 0, callId), data);
    return call.sendCredit;
  }

  /** Send no more messages on `callId` (HALF_CLOSE). Does nothing for an ended call. */
  halfClose(callId: number): void {
    const call = this.calls.get(callId);
    if (call === undefined) {
      this.checkKnownCall(callId);
      return;
    }
    call.state = this.transition(call, CallInput.CLIENT_HALF_CLOSE, callId, true);
    this.out.push(encodeHalfClose(callId));
  }

  /**
   * Abandon `callId` (CANCEL with `code`): the server stops the handler. The call
   * is forgotten at once; frames already on their way for it are ignored and no
   * event reports it. Cancelling an ended call does nothing.
   */
  cancel(callId: number, code: StatusCode = StatusCode.CANCELLED, reason = ""): void {
    const call = this.calls.get(callId);
    if (call === undefined) {
      this.checkKnownCall(callId);
      return;
    }
    this.forget(callId, call);
    this.out.push(encodeCancel(callId, code, reason));
  }

  /**
   * The application consumed `size` bytes of messages on `callId`: credit goes
   * back to the server in batched WINDOW_UPDATE frames (once half the window
   * is consumed). Acknowledging an ended call does nothing.
   */
  acknowledge(callId: number, size: number): void {
    const call = this.calls.get(callId);
    if (call === undefined) return;
    if (size < 0 || size > call.buffered) {
      throw new LocalProtocolError(
        `acknowledged ${size} bytes on call ${callId} but only ${call.buffered} are unread`,
      );
    }
    call.buffered -= size;
    this.bufferedTotal -= size;
    const pending = call.pendingAck + size;
    if (pending >= this.ackThreshold && !this.isClosed) {
      call.recvCredit += pending;
      call.pendingAck = 0;
      this.out.push(encodeWindowUpdate(callId, pending));
    } else {
      call.pendingAck = pending;
    }
  }

  /** Send a PING with eight opaque bytes; the server answers with a PONG. */
  ping(data: Uint8Array = new Uint8Array(8)): void {
    if (this.isClosed) throw new ConnectionClosedError("the Flare connection is closed");
    if (data.length !== 8) throw new RangeError("PING data must be exactly 8 bytes");
    this.out.push(encodePing(data));
  }

  /** Queue CLOSE and end every call; reports `connection-closed` (byPeer false). Idempotent. */
  close(code: CloseCode = CloseCode.NO_ERROR, reason = ""): void {
    if (this.isClosed) return;
    this.out.push(encodeClose(code, reason));
    this.shut(code, reason, false);
  }

  // ---------------------------------------------------------------- receiving

  private parse(data: Uint8Array, now: number): void {
    const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
    const end = data.length;
    const maxMessageSize = this.settings.maxMessageSize;
    let pos = 0;
    while (end - pos >= HEADER_SIZE) {
      const length = view.getUint32(pos);
      const type = data[pos + 4]!;
      const flags = data[pos + 5]!;
      const callId = view.getUint32(pos + 6);
      const start = pos + HEADER_SIZE;
      const stop = start + length;
      if (type === FrameType.MESSAGE) {
        if (length > maxMessageSize) {
          this.messageTooLarge(callId, length);
          if (this.isClosed) return;
          if (stop > end) {
            this.skip = stop - end;
            return;
          }
          pos = stop;
          continue;
        }
        if (stop > end) break;
        this.onMessage(data.subarray(start, stop), flags, callId);
        if (this.isClosed) return;
        pos = stop;
        continue;
      }
      if (type === FrameType.PUSH) {
        if (length > maxMessageSize) {
          this.fail(
            CloseCode.FRAME_TOO_LARGE,
            `PUSH of ${length} bytes exceeds max_message_size ${maxMessageSize}`,
          );
          return;
        }
      } else if (length > this.settings.maxFrameSize) {
        this.fail(
          CloseCode.FRAME_TOO_LARGE,
          `frame of ${length} bytes exceeds max_frame_size ${this.settings.maxFrameSize}`,
        );
        return;
      }
      if (stop > end) break;
      this.onFrame(type, data, start, stop, callId);
      if (this.isClosed) return;
      pos = stop;
    }
    if (pos < end) {
      const rest = data.slice(pos);
      this.pending = [rest];
      this.pendingSize = rest.length;
      this.needed =
        rest.length >= HEADER_SIZE ? HEADER_SIZE + view.getUint32(pos) : HEADER_SIZE;
    }
  }

  private onFrame(type: number, data: Uint8Array, start: number, stop: number, callId: number): void {
    switch (type) {
      case FrameType.HELLO:
        return this.onHello(data, start, stop);
      case FrameType.HEADERS:
        return this.onHeaders(data, start, stop, callId);
      case FrameType.END_CALL:
        return this.onEndCall(data, start, stop, callId);
      case FrameType.WINDOW_UPDATE:
        return this.onWindowUpdate(data, start, stop, callId);
      case FrameType.PUSH:
        this.requireEstablished("PUSH");
        this.events.push({ kind: "push-received", typeId: callId, data: data.slice(start, stop) });
        return;
      case FrameType.PING: {
        this.requireEstablished("PING");
        const payload = decodePingPayload(data, start, stop);
        this.out.push(encodePong(payload));
        this.events.push({ kind: "ping-received", data: payload });
        return;
      }
      case FrameType.PONG:
        this.requireEstablished("PONG");
        this.events.push({ kind: "pong-received", data: decodePingPayload(data, start, stop) });
        return;
      case FrameType.GOAWAY:
        return this.onGoAway(data, start, stop);
      case FrameType.CLOSE: {
        const [code, reason] = decodeClosePayload(data, start, stop);
        if (code in CloseCode) this.shut(code as CloseCode, reason, true);
        else this.shut(CloseCode.PROTOCOL_ERROR, `unknown close code ${code}: ${reason}`, true);
        return;
      }
      case FrameType.CALL_START:
      case FrameType.HALF_CLOSE:
      case FrameType.CANCEL:
        throw new RemoteProtocolError(`a server must not send ${FrameType[type]}`);
      default:
        throw new RemoteProtocolError(`unknown frame type 0x${type.toString(16).padStart(2, "0")}`);
    }
  }

  private onHello(data: Uint8Array, start: number, stop: number): void {
    if (this.version !== undefined) throw new RemoteProtocolError("duplicate HELLO");
    const [minVersion, maxVersion, pairs] = decodeHelloPayload(data, start, stop);
    if (!(minVersion <= PROTOCOL_VERSION && PROTOCOL_VERSION <= maxVersion)) {
      this.fail(
        CloseCode.UNSUPPORTED_VERSION,
        `unsupported protocol version ${minVersion}..${maxVersion}; ` +
          `this endpoint speaks ${PROTOCOL_VERSION}..${PROTOCOL_VERSION}`,
      );
      return;
    }
    if (minVersion !== maxVersion) {
      throw new RemoteProtocolError("the server's HELLO must name exactly one version");
    }
    const peer = settingsFromPairs(pairs);
    // Calls pipelined before this HELLO assumed the minimum window (§6).
    const delta = peer.initialWindowSize - this.peerSettings.initialWindowSize;
    if (delta !== 0) for (const call of this.calls.values()) call.sendCredit += delta;
    this.peerSettings = peer;
    this.version = PROTOCOL_VERSION;
    this.helloDeadline = undefined;
    this.events.push({ kind: "handshake-completed", version: PROTOCOL_VERSION, peerSettings: peer });
  }

  private onMessage(payload: Uint8Array, flags: number, callId: number): void {
    const call = this.calls.get(callId);
    if (call === undefined) {
      this.checkIgnorable(callId, "MESSAGE");
      return;
    }
    if (this.version === undefined) throw new RemoteProtocolError("MESSAGE before HELLO");
    const state = this.transition(call, CallInput.SERVER_MESSAGE, callId, false);
    if (call.recvCredit <= 0) {
      this.fail(CloseCode.FLOW_CONTROL_ERROR, `MESSAGE on call ${callId} without flow-control credit`);
      return;
    }
    const length = payload.length;
    call.state = state;
    call.recvCredit -= length;
    call.buffered += length;
    this.bufferedTotal += length;
    if (this.bufferedTotal > this.config.maxBufferedInput) {
      this.failCall(
        callId,
        call,
        `connection receive buffer full (max_buffered_input ${this.config.maxBufferedInput} bytes)`,
      );
    } else if (flags & FLAG_END_CALL) {
      // The compact end (§3.4): the call ended OK with this message.
      this.forget(callId, call);
      this.events.push(callEnded(callId, StatusCode.OK, "", false, payload.slice()));
    } else {
      this.events.push({ kind: "message-received", callId, data: payload.slice() });
    }
  }

  private onHeaders(data: Uint8Array, start: number, stop: number, callId: number): void {
    this.requireEstablished("HEADERS");
    const call = this.calls.get(callId);
    if (call === undefined) {
      this.checkIgnorable(callId, "HEADERS");
      return;
    }
    const state = this.transition(call, CallInput.SERVER_HEADERS, callId, false);
    const metadata = decodeMetadata(data, start, stop);
    if (stop - start > this.settings.maxMetadataSize) {
      this.failCall(
        callId,
        call,
        `response headers of ${stop - start} bytes exceed max_metadata_size ${this.settings.maxMetadataSize}`,
      );
      return;
    }
    call.state = state;
    this.events.push({ kind: "headers-received", callId, metadata });
  }

  private onEndCall(data: Uint8Array, start: number, stop: number, callId: number): void {
    this.requireEstablished("END_CALL");
    const payload = decodeEndCallPayload(data, start, stop);
    const call = this.calls.get(callId);
    if (call === undefined) {
      this.checkIgnorable(callId, "END_CALL");
      return;
    }
    this.transition(call, CallInput.SERVER_END, callId, false);
    this.forget(callId, call);
    if (payload.trailersSize > this.settings.maxMetadataSize) {
      this.events.push(
        callEnded(
          callId,
          StatusCode.RESOURCE_EXHAUSTED,
          `trailers exceed max_metadata_size ${this.settings.maxMetadataSize}`,
          true,
        ),
      );
      return;
    }
    this.events.push({
      kind: "call-ended",
      callId,
      status: statusFromWire(payload.status),
      message: payload.message,
      details: payload.details,
      trailers: payload.trailers,
      local: false,
      final: undefined,
    });
  }

  private onWindowUpdate(data: Uint8Array, start: number, stop: number, callId: number): void {
    this.requireEstablished("WINDOW_UPDATE");
    const increment = decodeWindowUpdatePayload(data, start, stop);
    if (callId === 0) throw new RemoteProtocolError("WINDOW_UPDATE on call id 0");
    const call = this.calls.get(callId);
    if (call === undefined) {
      this.checkIgnorable(callId, "WINDOW_UPDATE");
      return;
    }
    call.sendCredit += increment;
    if (call.sendCredit > MAX_WINDOW) {
      this.fail(CloseCode.FLOW_CONTROL_ERROR, `send credit of call ${callId} exceeds 2**31-1`);
      return;
    }
    this.events.push({ kind: "window-updated", callId, credit: call.sendCredit });
  }

  private onGoAway(data: Uint8Array, start: number, stop: number): void {
    this.requireEstablished("GOAWAY");
    const [lastCallId, reason] = decodeGoAwayPayload(data, start, stop);
    if (this.goAwayLast !== undefined && lastCallId > this.goAwayLast) {
      throw new RemoteProtocolError("a later GOAWAY must not raise last_call_id");
    }
    this.goAwayLast = lastCallId;
    for (const [callId, call] of [...this.calls]) {
      if (callId <= lastCallId) continue;
      this.forget(callId, call);
      this.events.push(
        callEnded(
          callId,
          StatusCode.UNAVAILABLE,
          "the server is going away; the call was not processed",
          true,
        ),
      );
    }
    this.events.push({ kind: "goaway-received", lastCallId, reason });
  }

  // ---------------------------------------------------------------- helpers

  private transition(call: Call, input: CallInput, callId: number, local: boolean): number {
    const state = TRANSITIONS[call.state]![input]!;
    if (state < 0) {
      const message = `${CallInput[input]} is not allowed on call ${callId} in state ${CallState[call.state]}`;
      if (local) throw new LocalProtocolError(message);
      throw new RemoteProtocolError(message);
    }
    return state;
  }

  private requireEstablished(what: string): void {
    if (this.version === undefined) throw new RemoteProtocolError(`${what} before HELLO`);
  }

  private checkIgnorable(callId: number, what: string): void {
    // A frame for a call that ended here may cross our own end of it (§5.3).
    if (callId === 0 || callId > this.lastCallId) {
      throw new RemoteProtocolError(`${what} for call ${callId}, which was never started`);
    }
  }

  private checkKnownCall(callId: number): void {
    if (this.isClosed) throw new ConnectionClosedError("the Flare connection is closed");
    if (callId <= 0 || callId > this.lastCallId) {
      throw new LocalProtocolError(`call ${callId} was never started`);
    }
  }

  private pushDeadline(deadline: number, callId: number): void {
    this.deadlines.push([deadline, callId]);
    // Calls that end before their deadline leave entries behind: rebuild when
    // they dominate, so the heap stays proportional to open calls.
    if (this.deadlines.size > 2 * this.calls.size + 64) {
      this.deadlines.clear();
      for (const [id, call] of this.calls) {
        if (call.deadline !== undefined) this.deadlines.push([call.deadline, id]);
      }
    }
  }

  private forget(callId: number, call: Call): void {
    this.calls.delete(callId);
    this.bufferedTotal -= call.buffered;
  }

  /** The server broke a call-level limit: CANCEL 8 and fail the call locally (§7). */
  private failCall(callId: number, call: Call, message: string): void {
    this.forget(callId, call);
    this.out.push(encodeCancel(callId, StatusCode.RESOURCE_EXHAUSTED, message));
    this.events.push(callEnded(callId, StatusCode.RESOURCE_EXHAUSTED, message, true));
  }

  private messageTooLarge(callId: number, length: number): void {
    const call = this.calls.get(callId);
    if (call === undefined) {
      this.checkIgnorable(callId, "MESSAGE");
      return;
    }
    this.failCall(
      callId,
      call,
      `message of ${length} bytes exceeds max_message_size ${this.settings.maxMessageSize}`,
    );
  }

  /** The server broke the rules: queue CLOSE and report it (§8). */
  private fail(code: CloseCode, reason: string): void {
    this.out.push(encodeClose(code, reason));
    this.shut(code, reason, false);
  }

  private shut(code: CloseCode, reason: string, byPeer: boolean): void {
    this.isClosed = true;
    this.calls.clear();
    this.deadlines.clear();
    this.pending = [];
    this.pendingSize = 0;
    this.skip = 0;
    this.bufferedTotal = 0;
    this.events.push({ kind: "connection-closed", code, reason, byPeer });
  }
}

function callEnded(
  callId: number,
  status: StatusCode,
  message: string,
  local: boolean,
  final?: Uint8Array,
): CallEnded {
  return {
    kind: "call-ended",
    callId,
    status,
    message,
    details: EMPTY,
    trailers: [],
    local,
    final,
  };
}
