/**
 * Status codes: gRPC's 0–16, the same numbers on every Flare transport
 * (docs/wire-format.md §3.6). A code this client does not know reads as UNKNOWN.
 */
export enum StatusCode {
  OK = 0,
  CANCELLED = 1,
  UNKNOWN = 2,
  INVALID_ARGUMENT = 3,
  DEADLINE_EXCEEDED = 4,
  NOT_FOUND = 5,
  ALREADY_EXISTS = 6,
  PERMISSION_DENIED = 7,
  RESOURCE_EXHAUSTED = 8,
  FAILED_PRECONDITION = 9,
  ABORTED = 10,
  OUT_OF_RANGE = 11,
  UNIMPLEMENTED = 12,
  INTERNAL = 13,
  UNAVAILABLE = 14,
  DATA_LOSS = 15,
  UNAUTHENTICATED = 16,
}

/** The status code for a number read from the wire: unknown numbers read as UNKNOWN. */
export function statusFromWire(code: number): StatusCode {
  return code >= 0 && code <= 16 ? (code as StatusCode) : StatusCode.UNKNOWN;
}

/** The name of a status code, e.g. `"NOT_FOUND"`. */
export function statusName(code: StatusCode): string {
  return StatusCode[code] ?? "UNKNOWN";
}
