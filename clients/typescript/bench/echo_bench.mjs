// The Node side of bench/ts_client_bench.py: @flare/client (this package's dist/)
// against a running Flare WebSocket server. Prints one JSON line.
//
//   node clients/typescript/bench/echo_bench.mjs URL TOKEN SEQ_N DURATION_S
import { BytesValueSchema } from "@bufbuild/protobuf/wkt";
import { connect, route } from "../dist/index.js";

const [url, token, seqN, durationS] = process.argv.slice(2);
const ECHO = route({
  path: "/flarebench.Bench/Echo",
  serviceId: 0x7e00,
  routeId: 1,
  wireId: 0x7e00 * 65536 + 1,
  cardinality: "unary",
  input: BytesValueSchema,
  output: BytesValueSchema,
  options: {
    idempotent: true,
    auth: "none",
    scopes: [],
    defaultTimeoutMs: undefined,
    transports: ["websocket"],
    maxMessageBytes: undefined,
    deprecated: false,
    deprecationNote: "",
  },
});
// BytesValue of 98 bytes serializes to 100 bytes, the payload of every transport bench.
const request = { value: new Uint8Array(98) };

const client = connect(url, { token, reconnect: false });
await client.ready({ timeoutMs: 10_000 });

for (let i = 0; i < 300; i++) await client.unary(ECHO, request);
const samples = [];
for (let i = 0; i < Number(seqN); i++) {
  const started = process.hrtime.bigint();
  await client.unary(ECHO, request);
  samples.push(Number(process.hrtime.bigint() - started) / 1000);
}
samples.sort((a, b) => a - b);
const percentile = (p) => samples[Math.min(samples.length - 1, Math.floor((p / 100) * samples.length))];

let completed = 0;
let stop = false;
async function caller() {
  while (!stop) {
    await client.unary(ECHO, request);
    completed++;
  }
}
const callers = Array.from({ length: 64 }, caller);
await new Promise((resolve) => setTimeout(resolve, 500));
const before = completed;
const cpuBefore = process.cpuUsage();
const started = performance.now();
await new Promise((resolve) => setTimeout(resolve, Number(durationS) * 1000));
const seconds = (performance.now() - started) / 1000;
const counted = completed - before;
const cpu = process.cpuUsage(cpuBefore);
stop = true;
await Promise.all(callers);
client.close();
console.log(
  JSON.stringify({
    p50_us: percentile(50),
    p99_us: percentile(99),
    inflight_msgs_per_s: counted / seconds,
    client_us_per_msg: (cpu.user + cpu.system) / counted,
  }),
);
