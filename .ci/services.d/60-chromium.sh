#!/usr/bin/env bash
# Headless Chromium and its WebDriver for the IM chat page test (tests/im/web),
# driven by Selenium at /usr/bin/chromium and /usr/bin/chromedriver.
# Idempotent: installs the Debian packages when missing; nothing to start.
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
apt_install chromium chromium-driver
echo "chromium: $(/usr/bin/chromium --version 2>/dev/null || echo missing)"
