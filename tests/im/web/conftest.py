"""Driving the chat page in headless Chromium: `ChatPage`, and the `browsers` fixture.

The browser comes from tests/chromium.py (Debian's chromium and chromedriver;
without them the tests skip loudly, or fail under FLARE_REQUIRE_SERVICES=1).
Selenium calls block, so they run in threads while the server under test keeps
the event loop.
"""

from __future__ import annotations

import asyncio
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.chromium import new_browser, require_browser

TIMEOUT = 30.0

# One call returns everything a test looks at, so a poll is one round trip.
_READ_PAGE = """
const all = (selector) => [...document.querySelectorAll(selector)];
const status = document.getElementById("status");
return {
  ready: status.dataset.ready || "",
  state: status.dataset.state || "",
  status: status.textContent,
  notice: document.getElementById("notice").textContent,
  title: document.getElementById("title").textContent,
  messages: all("#messages .message").map((e) => ({
    who: e.querySelector(".who").textContent,
    text: e.querySelector(".text").textContent,
    seq: e.dataset.seq,
    epoch: e.dataset.epoch,
    receipt: e.dataset.receipt,
    pending: e.classList.contains("pending"),
  })),
  conversations: all("#conversations li").map((e) => ({
    id: e.dataset.id,
    name: e.querySelector(".name").textContent,
    unread: Number(e.querySelector(".unread")?.textContent || 0),
    active: e.classList.contains("active"),
  })),
  online: all("#online li.online").map((e) => e.dataset.user),
  members: all("#online li").map((e) => e.dataset.user),
  typing: document.getElementById("typing").textContent,
};
"""


class ChatPage:
    """One browser showing the chat page, seen the way a user sees it."""

    def __init__(self, browser: Any) -> None:
        self.browser = browser

    async def open(self, page_url: str, user: str, *, by_form: bool = False) -> None:
        """Load the page and sign in as `user` (typing into the form, or by ``?user=``)."""
        if by_form:
            await asyncio.to_thread(self.browser.get, page_url)
            await self.type_into("user", user)
            await self.click("login")
        else:
            query = urllib.parse.urlencode({"user": user})
            await asyncio.to_thread(self.browser.get, f"{page_url}?{query}")
        await self.until(lambda page: page["ready"] == "yes")

    async def read(self) -> dict[str, Any]:
        """What the page shows (see _READ_PAGE)."""
        shown: dict[str, Any] = await asyncio.to_thread(self.browser.execute_script, _READ_PAGE)
        return shown

    async def texts(self) -> list[str]:
        """The open conversation's messages as "who text" lines."""
        return [f"{m['who']} {m['text']}" for m in (await self.read())["messages"]]

    async def until(
        self, check: Callable[[dict[str, Any]], bool], timeout: float = TIMEOUT
    ) -> dict[str, Any]:
        """Poll the page until `check(shown)` holds; returns what it showed then."""
        shown: dict[str, Any] = {}
        try:
            async with asyncio.timeout(timeout):
                while True:
                    shown = await self.read()
                    if check(shown):
                        return shown
                    await asyncio.sleep(0.1)
        except TimeoutError:
            logs = await asyncio.to_thread(self.browser.get_log, "browser")
            raise AssertionError(
                f"page never got there; it shows {shown}; console: {logs}"
            ) from None

    async def type_into(self, element_id: str, text: str) -> None:
        from selenium.webdriver.common.by import By

        element = self.browser.find_element(By.ID, element_id)
        await asyncio.to_thread(element.send_keys, text)

    async def click(self, element_id: str) -> None:
        from selenium.webdriver.common.by import By

        await asyncio.to_thread(self.browser.find_element(By.ID, element_id).click)

    async def say(self, text: str) -> None:
        """Type `text` into the message box and send it."""
        await self.type_into("text", text)
        await self.click("send")

    async def select(self, name: str) -> None:
        """Open the conversation listed as `name` ("# Lobby", "@ bob")."""
        from selenium.webdriver.common.by import By

        def click() -> None:
            for item in self.browser.find_elements(By.CSS_SELECTOR, "#conversations li"):
                if item.find_element(By.CSS_SELECTOR, ".name").text == name:
                    item.click()
                    return
            raise AssertionError(f"no conversation {name!r} listed")

        await asyncio.to_thread(click)
        await self.until(
            lambda page: any(c["active"] and c["name"] == name for c in page["conversations"])
        )


@pytest.fixture(scope="module")
def browsers() -> Iterator[tuple[Any, Any]]:
    """Two headless Chromium browsers for the module's tests (started once: they are slow)."""
    require_browser()
    first, second = new_browser(), new_browser()
    try:
        yield first, second
    finally:
        first.quit()
        second.quit()


@pytest.fixture
def pages(browsers: tuple[Any, Any]) -> Iterator[tuple[ChatPage, ChatPage]]:
    """The two browsers as chat pages; each test starts from a blank page."""
    yield ChatPage(browsers[0]), ChatPage(browsers[1])
    for browser in browsers:
        browser.get("about:blank")  # closes the page's connection
