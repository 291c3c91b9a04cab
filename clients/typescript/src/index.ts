/**
 * `@flare/client`: a Flare wire-protocol client for browsers and Node.js ≥ 20.
 *
 *     import { connect } from "@flare/client";
 *     import { ChatServiceClient, PUSH_TYPES } from "./gen/examples/chat/v1/chat_flare.js";
 *
 *     const client = connect("wss://chat.example.com", { token, pushTypes: PUSH_TYPES });
 *     const reply = await new ChatServiceClient(client).send({ message: { room: "lobby", text: "hi" } });
 *
 * See docs/typescript.md.
 */
export {
  type BidiStream,
  type CallOptions,
  type CallTransport,
  type RequestStream,
  type ServerStream,
} from "./calls.js";
export {
  type BackoffOptions,
  type ClientOptions,
  type ClientState,
  DEFAULT_BACKOFF,
  FlareClient,
  type ResumeInfo,
  backoffDelay,
  connect,
} from "./client.js";
export {
  ConnectionClosedError,
  FlareError,
  LocalProtocolError,
  ProtocolError,
  RemoteProtocolError,
  RpcError,
} from "./errors.js";
export { Metadata, type MetadataInit, type MetadataValue } from "./metadata.js";
export { type Push, type PushCallback } from "./pushes.js";
export {
  type Cardinality,
  type PushType,
  type Route,
  type RouteOptions,
  type TransportName,
  pushType,
  route,
} from "./routes.js";
export { StatusCode, statusName } from "./status.js";
export { type WebSocketConstructor, type WebSocketLike } from "./websocket.js";
export { type ProtocolConfig, type Settings } from "./protocol/config.js";
