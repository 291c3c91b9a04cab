/**
 * Error details on the Flare wire: END_CALL's details bytes are a serialized
 * `google.rpc.Status` whose `details` list holds `google.protobuf.Any`
 * messages (flare_runtime/details.py packs them the same way on every transport).
 */
import { fromBinary } from "@bufbuild/protobuf";
import { type Any } from "@bufbuild/protobuf/wkt";

import { StatusSchema } from "./gen/google/rpc/status_pb.js";

/** The `Any` details of a serialized `google.rpc.Status`; bytes that do not parse give none. */
export function decodeStatusDetails(data: Uint8Array): Any[] {
  if (data.length === 0) return [];
  try {
    return fromBinary(StatusSchema, data).details;
  } catch {
    return [];
  }
}
