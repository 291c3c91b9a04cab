/**
 * The sans-I/O Flare wire protocol, client side: bytes in, events out, no
 * sockets and no clock (`@flare/client/protocol`). Tests and tools use it
 * directly; applications use `connect` from `@flare/client`.
 */
export * from "./config.js";
export * from "./connection.js";
export type * from "./events.js";
export * from "./frames.js";
export * from "./state.js";
