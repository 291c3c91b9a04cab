/** Test helpers: a real Flare server in a child Python process, and small utilities. */
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
/** The repository root (this file runs from clients/typescript/build/test/). */
export const ROOT = resolve(here, "../../../..");

function python(): string {
  const configured = process.env["FLARE_PYTHON"];
  if (configured) return configured;
  const venv = join(ROOT, ".venv", "bin", "python");
  return existsSync(venv) ? venv : "python3";
}

/** A running test server (clients/typescript/test/flare_server.py). */
export interface TestServer {
  readonly port: number;
  readonly url: string;
  readonly process: ChildProcess;
  /** Stop it: SIGTERM drains gracefully (GOAWAY), SIGKILL drops every connection. */
  stop(signal?: NodeJS.Signals): Promise<void>;
}

/** Start the test server on `port` (0: any free port) and wait until it listens. */
export function startServer(port = 0): Promise<TestServer> {
  const child = spawn(python(), [join(ROOT, "clients/typescript/test/flare_server.py"), "--port", String(port)], {
    cwd: ROOT,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stderr = "";
  child.stderr!.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<void>((resolveExit) => child.once("exit", () => resolveExit()));
  return new Promise((resolveStart, reject) => {
    let stdout = "";
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`the test server did not start within 20 s\n${stderr}`));
    }, 20_000);
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`the test server exited (${code}) before listening\n${stderr}`));
    });
    child.stdout!.on("data", (chunk: Buffer) => {
      stdout += chunk.toString();
      const match = /READY (\d+)/.exec(stdout);
      if (match === null) return;
      clearTimeout(timer);
      const listening = Number(match[1]);
      resolveStart({
        port: listening,
        url: `ws://127.0.0.1:${listening}`,
        process: child,
        async stop(signal: NodeJS.Signals = "SIGKILL") {
          if (child.exitCode === null && child.signalCode === null) child.kill(signal);
          await exited;
        },
      });
    });
  });
}

/** Resolve after `ms` milliseconds. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolveSleep) => setTimeout(resolveSleep, ms));
}

/** Bytes from a hex string with optional spaces. */
export function hex(text: string): Uint8Array {
  const clean = text.replace(/\s+/g, "");
  const out = new Uint8Array(clean.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(clean.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/** Lower-case hex of `bytes`, no spaces. */
export function toHex(bytes: Uint8Array): string {
  return Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
}
