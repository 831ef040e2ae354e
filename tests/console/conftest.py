"""The owner console's browser: Debian's headless chromium driven by Selenium through chromium-driver.

``scripts/browser.sh`` installs both (``.ci/run`` runs it with ``FEDIMG_REQUIRE_BROWSER=1``).
Without them the browser tests skip, saying how to install them -- unless
``FEDIMG_REQUIRE_BROWSER=1``, where a missing browser fails them. Screenshots go to
``$FEDIMG_SCREENSHOTS`` when it is set (``docs/console`` for the README), else to a
temporary folder.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
WINDOW = (1280, 900)


def _missing() -> str | None:
    """What keeps the browser tests from running, or None."""
    if importlib.util.find_spec("selenium") is None:
        return "selenium is not installed (pip install -c constraints.txt -e '.[test]')"
    absent = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    if absent:
        return f"{' and '.join(absent)} missing (run scripts/browser.sh as root, or apt-get install chromium chromium-driver)"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A headless chromium (1280x900) for the module; quit at teardown."""
    missing = _missing()
    if missing:
        if os.environ.get("FEDIMG_REQUIRE_BROWSER") == "1":
            pytest.fail(f"FEDIMG_REQUIRE_BROWSER=1 but {missing}")
        pytest.skip(f"no browser for the console tests: {missing}")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_window_size(*WINDOW)
    driver.set_page_load_timeout(120)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the tests' screenshots go: ``$FEDIMG_SCREENSHOTS`` (created) or a temporary folder."""
    chosen = os.environ.get("FEDIMG_SCREENSHOTS")
    if chosen:
        folder = Path(chosen)
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    return tmp_path_factory.mktemp("screenshots")
