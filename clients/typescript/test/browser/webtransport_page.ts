/**
 * The page of tests/runtime/transports/test_webtransport_browser.py: in headless
 * Chromium, `@flare/client` calls the conformance service over WebTransport
 * (a unary call, a server stream, the caller's identity, pushes).
 * Bundled by that test with esbuild; not a Node test.
 */
import { connect } from "@flare/client";

import { COUNT, ECHO, PUSH_ME, STRING_PUSH, WHO_AM_I } from "../conformance.js";

interface Outcome {
  echo: string;
  counted: number[];
  me: string;
  pushes: string[];
  state: string;
}

declare global {
  interface Window {
    flareWebTransport(url: string, certificateHash: string, token: string): Promise<Outcome>;
  }
}

window.flareWebTransport = async (url, certificateHash, token) => {
  const hash = Uint8Array.from(atob(certificateHash), (c) => c.charCodeAt(0));
  const client = connect(url, {
    token,
    pushTypes: [STRING_PUSH],
    reconnect: false,
    webTransport: { serverCertificateHashes: [{ algorithm: "sha-256", value: hash }] },
  });
  const pushes: string[] = [];
  const pushed = new Promise<void>((resolve) => {
    client.onPush(STRING_PUSH, (push) => {
      pushes.push(push.value);
      if (pushes.length === 2) resolve();
    });
  });
  try {
    const echo = await client.unary(ECHO, { value: new TextEncoder().encode("over WebTransport") });
    const counted: number[] = [];
    for await (const item of client.serverStream(COUNT, { value: 3n })) counted.push(Number(item.value));
    const me = await client.unary(WHO_AM_I, {});
    await client.unary(PUSH_ME, { value: 2n });
    await pushed;
    return { echo: new TextDecoder().decode(echo.value), counted, me: me.value, pushes, state: client.state };
  } finally {
    client.close();
  }
};
