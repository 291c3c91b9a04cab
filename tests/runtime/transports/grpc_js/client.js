// A stock @grpc/grpc-js client for Flare's gRPC server: no Flare code involved.
//
//   node client.js TARGET SCHEMAS_DIR TOKEN
//
// Loads examples/chat/v1/chat.proto with @grpc/proto-loader, calls a unary
// method (Ping, Send), a server-streaming method (Subscribe) and a failing
// call, then prints one JSON line with what it saw. Exits non-zero on any
// unexpected failure; gives up after 20 s so it always ends by itself.
"use strict";

const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const [target, schemas, token] = process.argv.slice(2);
setTimeout(() => {
  console.error("grpc-js client: timed out");
  process.exit(3);
}, 20000).unref();

const definition = protoLoader.loadSync("examples/chat/v1/chat.proto", {
  includeDirs: [schemas],
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
});
const chat = grpc.loadPackageDefinition(definition).examples.chat.v1;
const client = new chat.ChatService(target, grpc.credentials.createInsecure());

function deadline() {
  return new Date(Date.now() + 10000);
}

function authorized() {
  const metadata = new grpc.Metadata();
  metadata.set("authorization", `Bearer ${token}`);
  return metadata;
}

function unary(method, request, metadata) {
  return new Promise((resolve, reject) => {
    client[method](request, metadata, { deadline: deadline() }, (error, reply) =>
      error ? reject(error) : resolve(reply),
    );
  });
}

function serverStream(method, request, metadata) {
  return new Promise((resolve, reject) => {
    const replies = [];
    const call = client[method](request, metadata, { deadline: deadline() });
    call.on("data", (reply) => replies.push(reply));
    call.on("error", reject);
    call.on("end", () => resolve(replies));
  });
}

async function main() {
  const result = {};
  const pong = await unary("Ping", {}, new grpc.Metadata());
  result.ping_seconds = Number(pong.seconds);

  const sent = await unary(
    "Send",
    { clientMessageId: "js-1", message: { room: "lobby", text: "hello from grpc-js" } },
    authorized(),
  );
  result.send_seq = Number(sent.seq);

  const events = await serverStream("Subscribe", { room: "lobby", afterSeq: 0 }, authorized());
  result.subscribe_texts = events.map((event) => event.posted.message.text);

  try {
    await unary("Send", { clientMessageId: "js-2", message: { room: "" } }, authorized());
    result.error = null;
  } catch (error) {
    result.error = {
      code: error.code,
      details: error.details,
      has_status_details: error.metadata.get("grpc-status-details-bin").length === 1,
    };
  }
  client.close();
  console.log(JSON.stringify(result));
}

main().catch((error) => {
  console.error(`grpc-js client failed: ${error.code} ${error.details || error.message}`);
  process.exit(1);
});
