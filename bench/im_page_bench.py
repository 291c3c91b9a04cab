"""The IM chat page's time from load to first message, in headless Chromium.

One demo server (``flare_runtime.im.demo``: the IM core on SQLite over
WebSocket) whose lobby holds one message, and the chat page served over HTTP.
Each repetition opens the page in a fresh tab state as a new user; a script
injected before the page's own (CDP ``Page.addScriptToEvaluateOnNewDocument``)
types the name into the sign-in form and submits it at DOMContentLoaded, and
notes when the first message appears in ``#log``. Per repetition, from the
navigation's start (ms):

* ``dom_ready_ms``       DOMContentLoaded: the page and its script fetched, parsed, run
* ``first_message_ms``   the lobby's message drawn: connect, HELLO, sign-in, history
* ``sign_in_to_message_ms``  the same, from the form's submission

``--baseline-rev REV`` also serves the page as it was at git revision REV (its
``flare_runtime/im/web/static``, e.g. the hand-written JS client before the
generated one), from the same server, interleaved, and prints the ratios.

    .venv/bin/python -m bench.im_page_bench [--reps 15] [--baseline-rev REV] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from flare.im.v1 import content_pb2, im_pb2  # noqa: E402
from flare.im.v1.im_flare import ImServiceClient  # noqa: E402
from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402

from flare_runtime.client import connect  # noqa: E402
from flare_runtime.im.demo import LOBBY, start_demo  # noqa: E402
from flare_runtime.im.service import ImService  # noqa: E402
from flare_runtime.im.web.site import STATIC_DIR, StaticSite  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

# Runs before the page's scripts; the name comes from the address's fragment.
INSTRUMENT = """
(() => {
  const name = decodeURIComponent(location.hash.slice(1));
  if (!name) return;
  const bench = (window.__flareBench = {});
  document.addEventListener("DOMContentLoaded", () => {
    bench.domReady = performance.now();
    const log = document.getElementById("log");
    const seen = () => {
      if (bench.firstMessage === undefined && log.querySelector(".message")) {
        bench.firstMessage = performance.now();
      }
    };
    new MutationObserver(seen).observe(log, { childList: true, subtree: true });
    document.getElementById("user").value = name;
    bench.submitted = performance.now();
    document.getElementById("login-form").requestSubmit();
  });
})();
"""


def static_at(revision: str, into: Path) -> Path:
    """The page's static/ directory as it was at git `revision`, extracted under `into`."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", revision, "flare_runtime/im/web/static"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into / "flare_runtime" / "im" / "web" / "static"


def new_browser() -> Any:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-extensions",
        "--no-first-run",
        "--window-size=1000,700",
    ):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": INSTRUMENT})
    return browser


def load_once(browser: Any, url: str, timeout: float = 20.0) -> dict[str, float]:
    """Open `url` (which names the user in its fragment); the figures once a message shows."""
    browser.get("about:blank")
    browser.get(url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = browser.execute_script("return window.__flareBench || null")
        if found and "firstMessage" in found:
            return {
                "dom_ready_ms": found["domReady"],
                "first_message_ms": found["firstMessage"],
                "sign_in_to_message_ms": found["firstMessage"] - found["submitted"],
            }
        time.sleep(0.005)
    raise TimeoutError(f"{url}: no message shown within {timeout} s")


async def seed(url: str) -> None:
    """Put one message in the lobby, for the page to show first."""
    channel = await connect(url, token="seed", push_tables=[ImService.PUSH_TYPES])
    try:
        client = ImServiceClient(channel)
        await client.login(im_pb2.LoginRequest(device_id="bench"))
        await client.join_room(im_pb2.JoinRoomRequest(conversation_id=LOBBY))
        await client.send(
            im_pb2.SendRequest(
                conversation_id=LOBBY,
                client_message_id="seed-1",
                content=content_pb2.Content(text=content_pb2.TextContent(text="welcome")),
            )
        )
    finally:
        await channel.close()


async def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    pages = {"page": STATIC_DIR}
    if args.baseline_rev:
        pages["baseline"] = static_at(args.baseline_rev, work / "baseline")
    demo = await start_demo(work / "bench.db")
    sites: dict[str, StaticSite] = {}
    try:
        websocket_port = demo.server.port("websocket")
        await seed(f"ws://127.0.0.1:{websocket_port}")
        for label, directory in pages.items():
            site = StaticSite(websocket_port, lobby=LOBBY, static_dir=directory)
            await site.start()
            sites[label] = site
        browser = await asyncio.to_thread(new_browser)
        try:
            samples: dict[str, list[dict[str, float]]] = {label: [] for label in pages}
            for rep in range(args.warmup + args.reps):
                order = list(pages) if rep % 2 == 0 else list(reversed(pages))
                for label in order:
                    url = f"http://127.0.0.1:{sites[label].port}/#{label}{rep}"
                    figures = await asyncio.to_thread(load_once, browser, url)
                    if rep >= args.warmup:
                        samples[label].append(figures)
        finally:
            await asyncio.to_thread(browser.quit)
    finally:
        for site in sites.values():
            await site.close()
        await demo.close()
    result: dict[str, Any] = {}
    for label, runs in samples.items():
        result[label] = {
            key: round(statistics.median(run[key] for run in runs), 1) for key in runs[0]
        }
        result[label]["script_bytes"] = sum(
            path.stat().st_size for path in pages[label].glob("*.js")
        )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--baseline-rev", help="also measure the page of this git revision")
    parser.add_argument("--quick", action="store_true", help="3 repetitions")
    args = parser.parse_args()
    if args.quick:
        args.reps, args.warmup = 3, 1
    with tempfile.TemporaryDirectory() as work:
        result = asyncio.run(run(args, Path(work)))
    labels = list(result)
    print(f"medians of {args.reps} loads (ms from navigation start; bytes of script)")
    print(f"{'measure':<24}" + "".join(f"{label:>14}" for label in labels))
    for key in ("dom_ready_ms", "first_message_ms", "sign_in_to_message_ms", "script_bytes"):
        row = "".join(f"{result[label][key]:>14.1f}" for label in labels)
        if "baseline" in result and result["baseline"][key]:
            row += f"   page/baseline {result['page'][key] / result['baseline'][key]:.2f}"
        print(f"{key:<24}{row}")
    print(json.dumps({"bench": "im_page", "reps": args.reps, **result}))


if __name__ == "__main__":
    main()
