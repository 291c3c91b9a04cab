/**
 * The conformance service's routes (flare_runtime/testing/service.py), declared
 * by hand with well-known types: it has no .proto, so no generated client.
 */
import { type DescMessage } from "@bufbuild/protobuf";
import { BytesValueSchema, Int64ValueSchema, StringValueSchema } from "@bufbuild/protobuf/wkt";
import { type Cardinality, type Route, pushType, route } from "@flare/client";

const SERVICE = "flare.testing.v1.ConformanceService";
const SERVICE_ID = 0x7f00;

function conformance<I extends DescMessage, O extends DescMessage>(
  method: string,
  routeId: number,
  cardinality: Cardinality,
  input: I,
  output: O,
): Route<I, O> {
  return route({
    path: `/${SERVICE}/${method}`,
    serviceId: SERVICE_ID,
    routeId,
    wireId: SERVICE_ID * 65536 + routeId,
    cardinality,
    input,
    output,
    options: {
      idempotent: false,
      auth: "none",
      scopes: [],
      defaultTimeoutMs: undefined,
      transports: ["websocket", "quic", "grpc"],
      maxMessageBytes: undefined,
      deprecated: false,
      deprecationNote: "",
    },
  });
}

export const ECHO = conformance("Echo", 1, "unary", BytesValueSchema, BytesValueSchema);
export const COUNT = conformance("Count", 2, "server_stream", Int64ValueSchema, Int64ValueSchema);
export const SUM = conformance("Sum", 3, "client_stream", Int64ValueSchema, Int64ValueSchema);
export const BIDI_ECHO = conformance("BidiEcho", 4, "bidi_stream", BytesValueSchema, BytesValueSchema);
export const WHO_AM_I = conformance("WhoAmI", 5, "unary", StringValueSchema, StringValueSchema);
export const ADMIN = conformance("Admin", 6, "unary", StringValueSchema, StringValueSchema);
export const FLOOD = conformance("Flood", 7, "server_stream", Int64ValueSchema, BytesValueSchema);
export const PUSH_ME = conformance("PushMe", 8, "unary", Int64ValueSchema, Int64ValueSchema);
/** A route the server does not serve. */
export const MISSING = conformance("Missing", 99, "unary", BytesValueSchema, BytesValueSchema);

/** `PushMe` pushes `StringValue`s under this type id. */
export const STRING_PUSH = pushType(0x7f01, StringValueSchema);
