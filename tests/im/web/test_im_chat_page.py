"""End to end: two headless Chromium pages log in as two users and chat.

Needs Debian's `chromium` and `chromium-driver` (installed by
`.ci/services.d/60-chromium.sh`); Selenium drives them. Without them the test
skips loudly, or fails under FLARE_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from flare_runtime.im.demo import DemoServer, start_demo
from flare_runtime.testing.timing import UNIT

CHROMIUM = "/usr/bin/chromium"
TIMEOUT = 20 * UNIT


def _require_browser() -> None:
    missing = [path for path in (CHROMIUM, "/usr/bin/chromedriver") if not shutil.which(path)]
    if missing:
        reason = f"{', '.join(missing)} missing: run `bash .ci/services.d/60-chromium.sh`"
        if os.environ.get("FLARE_REQUIRE_SERVICES") == "1":
            pytest.fail(reason)
        pytest.skip("SKIPPED LOUDLY: " + reason)


def _browser() -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

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
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


@pytest.fixture
async def demo(tmp_path: Path) -> AsyncIterator[DemoServer]:
    _require_browser()
    running = await start_demo(tmp_path / "chat.db")
    yield running
    await running.close()


async def _until(check: Callable[[], bool]) -> None:
    """Poll a blocking browser check from a thread, so the server keeps running."""
    async with asyncio.timeout(TIMEOUT):
        while not await asyncio.to_thread(check):
            await asyncio.sleep(0.1)


def _texts(browser: Any) -> list[str]:
    from selenium.webdriver.common.by import By

    return [element.text for element in browser.find_elements(By.CSS_SELECTOR, "#log .message")]


async def test_two_pages_see_each_others_messages(demo: DemoServer, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    browsers = await asyncio.gather(asyncio.to_thread(_browser), asyncio.to_thread(_browser))
    alice, bob = browsers
    try:
        for browser, name in ((alice, "alice"), (bob, "bob")):
            await asyncio.to_thread(browser.get, demo.page_url)
            await asyncio.to_thread(browser.find_element(By.ID, "user").send_keys, name)
            await asyncio.to_thread(browser.find_element(By.ID, "login").click)

        def ready(browser: Any) -> bool:
            return bool(browser.find_element(By.ID, "status").get_attribute("data-ready") == "yes")

        await _until(lambda: ready(alice) and ready(bob))

        async def say(browser: Any, text: str) -> None:
            box = browser.find_element(By.ID, "text")
            await asyncio.to_thread(box.send_keys, text)
            await asyncio.to_thread(browser.find_element(By.ID, "send").click)

        await say(alice, "hello bob")
        await _until(lambda: "alice hello bob" in _texts(bob))
        await say(bob, "hi alice")
        await _until(lambda: _texts(alice) == ["alice hello bob", "bob hi alice"])
        assert _texts(bob) == ["alice hello bob", "bob hi alice"]
        await _until(
            lambda: (
                "bob" in alice.find_element(By.ID, "online").text
                and "alice" in alice.find_element(By.ID, "online").text
            )
        )
        await asyncio.to_thread(alice.save_screenshot, str(tmp_path / "alice.png"))

        # A page opened later gets the history by Sync.
        await asyncio.to_thread(bob.refresh)
        await asyncio.to_thread(bob.find_element(By.ID, "user").send_keys, "bob")
        await asyncio.to_thread(bob.find_element(By.ID, "login").click)
        await _until(lambda: _texts(bob) == ["alice hello bob", "bob hi alice"])
    finally:
        await asyncio.gather(*(asyncio.to_thread(browser.quit) for browser in browsers))
