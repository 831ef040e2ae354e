#!/usr/bin/env bash
# Make sure the browser of the owner console's end-to-end tests is here: Debian's chromium
# and chromium-driver (Selenium drives /usr/bin/chromium through /usr/bin/chromedriver;
# Playwright's own browser downloads are not reachable from our machines).
# Installs them with apt-get when missing and we are root; otherwise says how, and the
# browser tests skip themselves -- unless FEDIMG_REQUIRE_BROWSER=1 (as in CI): then a
# missing browser is an error here and in the tests.
set -euo pipefail

_fedimg_browser_present() { command -v chromium >/dev/null && command -v chromedriver >/dev/null; }

if ! _fedimg_browser_present && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing chromium and chromium-driver (Debian packages) for the console's browser tests" >&2
  export DEBIAN_FRONTEND=noninteractive
  (apt-get install -y -q --no-install-recommends chromium chromium-driver >/dev/null 2>&1 ||
    { apt-get update -q >/dev/null 2>&1 &&
      apt-get install -y -q --no-install-recommends chromium chromium-driver >/dev/null 2>&1; }) ||
    echo "could not install chromium and chromium-driver with apt-get" >&2
fi

if _fedimg_browser_present; then
  echo "browser for the console tests: $(chromium --version 2>/dev/null || echo chromium), $(chromedriver --version 2>/dev/null | cut -d' ' -f1-2)" >&2
  exit 0
fi
how="install them as root: apt-get install chromium chromium-driver (or run this script as root)"
if [ "${FEDIMG_REQUIRE_BROWSER:-}" = 1 ]; then
  echo "FEDIMG_REQUIRE_BROWSER=1 but chromium and chromedriver are not installed; $how" >&2
  exit 1
fi
echo "chromium/chromedriver not available: the console's browser tests will be skipped; $how" >&2
