"""Headless Chromium calls a Flare server over WebTransport, through `@flare/client`.

The server is the conformance server on the webtransport transport (HTTP/3 on
aioquic, a 10-day ECDSA dev certificate). The page (bundled here with esbuild
from clients/typescript/test/browser/webtransport_page.ts) connects to
``https://127.0.0.1:<port>/flare`` trusting the certificate by its SHA-256
(``serverCertificateHashes``), then makes a unary call, a server-streaming
call, an authenticated call and receives pushes. Needs Chromium
(tests/chromium.py) and clients/typescript's Node packages (esbuild).
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from flare_runtime.im.web.site import StaticSite
from flare_runtime.testing.harness import start_rig
from flare_runtime.testing.webtransport_harness import dev_certificate
from flare_runtime.transports.webtransport import PATH, certificate_hash
from tests.chromium import new_browser, require_browser

ROOT = Path(__file__).resolve().parents[3]
PACKAGE = ROOT / "clients" / "typescript"
ESBUILD = PACKAGE / "node_modules" / ".bin" / "esbuild"

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><link rel="icon" href="data:,"></head>
<body><script src="page.js"></script></body></html>
"""


def bundle_page(into: Path) -> None:
    """Bundle the page's script with @flare/client from its sources."""
    if not (shutil.which("node") and ESBUILD.exists()):
        reason = "clients/typescript/node_modules missing: bash .ci/services.d/55-typescript.sh"
        if os.environ.get("FLARE_REQUIRE_SERVICES") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    subprocess.run(
        [
            str(ESBUILD),
            "test/browser/webtransport_page.ts",
            "--bundle",
            "--format=iife",
            "--target=es2022",
            "--alias:@flare/client=./src/index.ts",
            f"--outfile={into / 'page.js'}",
            "--log-level=warning",
        ],
        cwd=PACKAGE,
        check=True,
        timeout=120,
    )
    (into / "index.html").write_text(PAGE)


async def test_chromium_calls_a_route_over_webtransport(tmp_path: Path) -> None:
    require_browser()
    bundle_page(tmp_path)
    rig = await start_rig("webtransport")
    site = StaticSite(0, static_dir=tmp_path)  # the page needs a secure context: http://127.0.0.1
    await site.start()
    browser = await asyncio.to_thread(new_browser)
    try:
        port = rig.server.port("webtransport")
        digest = base64.b64encode(certificate_hash(dev_certificate().certificate)).decode()
        await asyncio.to_thread(browser.get, f"http://127.0.0.1:{site.port}/")
        browser.set_script_timeout(30)
        outcome: dict[str, Any] = await asyncio.to_thread(
            browser.execute_async_script,
            "const done = arguments[arguments.length - 1];"
            "window.flareWebTransport(arguments[0], arguments[1], arguments[2])"
            "  .then(done, (error) => done({ error: String(error) }));",
            f"https://127.0.0.1:{port}{PATH}",
            digest,
            rig.token("alice"),
        )
        logs = await asyncio.to_thread(browser.get_log, "browser")
        assert outcome == {
            "echo": "over WebTransport",
            "counted": [0, 1, 2],
            "me": "alice",
            "pushes": ["push 0", "push 1"],
            "state": "ready",
        }, logs
    finally:
        await asyncio.to_thread(browser.quit)
        await site.close()
        await rig.server.shutdown(1.0)
