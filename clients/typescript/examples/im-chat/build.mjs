// Bundle the chat page (src/page.ts, with @flare/client and @bufbuild/protobuf)
// into flare_runtime/im/web/static/chat.js, which the Python package serves as is.
//
//   node examples/im-chat/build.mjs           write the bundle
//   node examples/im-chat/build.mjs --check   exit 1 when the committed bundle differs
//
// Run from clients/typescript (esbuild comes from its node_modules, pinned by
// its package-lock.json). The output is deterministic: same sources, same bytes.
import { readFileSync, writeFileSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

import { build } from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, "..", "..", "..", "..");
const target = join(root, "flare_runtime", "im", "web", "static", "chat.js");

const result = await build({
  entryPoints: [join(here, "src", "page.ts")],
  tsconfig: join(here, "tsconfig.json"),
  absWorkingDir: here,
  bundle: true,
  write: false,
  format: "iife",
  platform: "browser",
  target: ["es2022"],
  minify: true,
  legalComments: "none",
  charset: "utf8",
  banner: {
    js: "// The Flare IM chat page, built from clients/typescript/examples/im-chat by build.mjs. DO NOT EDIT.",
  },
  logLevel: "warning",
});
const bundle = result.outputFiles[0].contents;

if (process.argv.includes("--check")) {
  let committed;
  try {
    committed = readFileSync(target);
  } catch {
    committed = Buffer.alloc(0);
  }
  if (!Buffer.from(bundle).equals(committed)) {
    console.error(
      `${relative(root, target)} is stale: run \`npm run build:im-chat\` in clients/typescript`,
    );
    process.exit(1);
  }
  console.log(`${relative(root, target)} is up to date (${bundle.length} bytes)`);
} else {
  writeFileSync(target, bundle);
  console.log(`wrote ${relative(root, target)} (${bundle.length} bytes)`);
}
