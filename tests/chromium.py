"""Headless Chromium under Selenium, for the tests that drive a browser.

Needs Debian's `chromium` and `chromium-driver` (installed by
`.ci/services.d/60-chromium.sh`). Without them `require_browser` skips loudly,
or fails under FLARE_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def require_browser() -> None:
    """Skip (or fail, under FLARE_REQUIRE_SERVICES=1) without Chromium and chromedriver."""
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not shutil.which(path)]
    if missing:
        reason = f"{', '.join(missing)} missing: run `bash .ci/services.d/60-chromium.sh`"
        if os.environ.get("FLARE_REQUIRE_SERVICES") == "1":
            pytest.fail(reason)
        pytest.skip("SKIPPED LOUDLY: " + reason)


def new_browser() -> Any:
    """A headless Chromium under chromedriver, its console log kept."""
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
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
