/**
 * Settings exchanged in HELLO and the local policy of a connection
 * (docs/wire-format.md §4 and §7; mirrors flare_runtime/protocol/config.py).
 */

/** Smallest per-call window a peer may announce; assumed until the server's HELLO arrives. */
export const MIN_INITIAL_WINDOW_SIZE = 65_536;
/** Smallest MAX_FRAME_SIZE a peer may announce. */
export const MIN_MAX_FRAME_SIZE = 16_384;
/** Largest window or credit (2**31-1). */
export const MAX_WINDOW = 2 ** 31 - 1;

/** What one side announces in HELLO: limits on what it accepts. */
export interface Settings {
  /** Largest payload of any frame except MESSAGE and PUSH (setting 1). */
  readonly maxFrameSize: number;
  /** Largest MESSAGE or PUSH payload (setting 2). */
  readonly maxMessageSize: number;
  /** Most calls open at once, enforced by the server (setting 3). */
  readonly maxConcurrentCalls: number;
  /** Per-call receive window in bytes (setting 4). */
  readonly initialWindowSize: number;
  /** Largest encoded metadata block (setting 5). */
  readonly maxMetadataSize: number;
  /** Accepts the compact call frames (setting 6, §3.2/§3.4). */
  readonly compactCalls: boolean;
}

/** The defaults of the wire format (§4). */
export const DEFAULT_SETTINGS: Settings = Object.freeze({
  maxFrameSize: 262_144,
  maxMessageSize: 4 * 1024 * 1024,
  maxConcurrentCalls: 1_000,
  initialWindowSize: 262_144,
  maxMetadataSize: 16_384,
  compactCalls: true,
});

/** Everything a `Connection` needs that is not on the wire; times in milliseconds. */
export interface ProtocolConfig {
  /** Announced to the server and enforced on input. */
  readonly settings: Settings;
  /** Most message bytes received but not yet consumed, over all calls (16 MiB). */
  readonly maxBufferedInput: number;
  /** Send a PING after this long without input; null turns keepalive off (20 s). */
  readonly keepaliveIntervalMs: number | null;
  /** Close with KEEPALIVE_TIMEOUT when nothing arrives this long after a PING (20 s). */
  readonly keepaliveTimeoutMs: number;
  /** Close with PROTOCOL_ERROR when the server's HELLO has not arrived by then (10 s). */
  readonly handshakeTimeoutMs: number;
  /** Announce consumed bytes once they reach this fraction of the window (0.5). */
  readonly windowUpdateRatio: number;
}

/** The reference implementation's defaults. */
export const DEFAULT_CONFIG: ProtocolConfig = Object.freeze({
  settings: DEFAULT_SETTINGS,
  maxBufferedInput: 16 * 1024 * 1024,
  keepaliveIntervalMs: 20_000,
  keepaliveTimeoutMs: 20_000,
  handshakeTimeoutMs: 10_000,
  windowUpdateRatio: 0.5,
});

/** A full config from a partial one; throws `RangeError` for a value the wire cannot carry. */
export function protocolConfig(
  overrides: Partial<Omit<ProtocolConfig, "settings">> & { settings?: Partial<Settings> } = {},
): ProtocolConfig {
  const settings: Settings = { ...DEFAULT_SETTINGS, ...overrides.settings };
  const config: ProtocolConfig = { ...DEFAULT_CONFIG, ...overrides, settings };
  if (settings.initialWindowSize < MIN_INITIAL_WINDOW_SIZE || settings.initialWindowSize > MAX_WINDOW) {
    throw new RangeError(`initialWindowSize must be ${MIN_INITIAL_WINDOW_SIZE} .. 2**31-1`);
  }
  if (settings.maxFrameSize < MIN_MAX_FRAME_SIZE || settings.maxFrameSize > 0xffffffff) {
    throw new RangeError(`maxFrameSize must be ${MIN_MAX_FRAME_SIZE} .. 2**32-1`);
  }
  for (const name of ["maxMessageSize", "maxConcurrentCalls", "maxMetadataSize"] as const) {
    const value = settings[name];
    if (!(value > 0 && value <= 0xffffffff)) {
      throw new RangeError(`${name} must be 1 .. 2**32-1, got ${value}`);
    }
  }
  if (!(config.windowUpdateRatio > 0 && config.windowUpdateRatio <= 1)) {
    throw new RangeError("windowUpdateRatio must be in (0, 1]");
  }
  if (!(config.maxBufferedInput > 0)) throw new RangeError("maxBufferedInput must be positive");
  return Object.freeze(config);
}
