/**
 * The per-call state machine as one transition table (docs/wire-format.md §5.3;
 * the same table as flare_runtime/protocol/state.py). A client checks what it
 * sends (a forbidden step throws `LocalProtocolError`) and what it receives (a
 * forbidden step is the server's fault: the connection closes with PROTOCOL_ERROR).
 */

/** Where a call stands; values index `TRANSITIONS`. A call that reaches CLOSED is forgotten. */
export enum CallState {
  OPEN = 0,
  OPEN_RESPONDING = 1,
  HALF_CLOSED = 2,
  HALF_CLOSED_RESPONDING = 3,
  CLOSED = 4,
}

/** What happens to a call; values index a row of `TRANSITIONS`. */
export enum CallInput {
  CLIENT_MESSAGE = 0,
  CLIENT_MESSAGE_END = 1,
  CLIENT_HALF_CLOSE = 2,
  CLIENT_CANCEL = 3,
  SERVER_HEADERS = 4,
  SERVER_MESSAGE = 5,
  SERVER_END = 6,
  LOCAL_FAILURE = 7,
}

/** Table entry for a step the protocol forbids. */
export const INVALID = -1;

const O = CallState.OPEN;
const OR = CallState.OPEN_RESPONDING;
const H = CallState.HALF_CLOSED;
const HR = CallState.HALF_CLOSED_RESPONDING;
const C = CallState.CLOSED;
const X = INVALID;

/** TRANSITIONS[state][input]: the next state, or INVALID. Columns follow `CallInput`. */
export const TRANSITIONS: ReadonlyArray<ReadonlyArray<number>> = [
  //  c-msg c-end c-half c-cancel s-headers s-msg s-end local-fail
  [O, H, H, C, OR, OR, C, C], // OPEN
  [OR, HR, HR, C, X, OR, C, C], // OPEN_RESPONDING
  [X, X, X, C, HR, HR, C, C], // HALF_CLOSED
  [X, X, X, C, X, HR, C, C], // HALF_CLOSED_RESPONDING
  [X, X, X, X, X, X, X, X], // CLOSED
];
