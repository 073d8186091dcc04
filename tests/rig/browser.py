"""Pytest plugin: Debian's chromium driven by Playwright (async API), for the browser tests.

Enabled by ``tests/browser/conftest.py`` for the browser tests alone. Fixtures:

- ``browser`` (session): one headless chromium for the whole run, launched from
  ``$HIVE_TEST_CHROMIUM`` (default ``/usr/bin/chromium``, which ``scripts/install-system-deps.sh``
  installs). Playwright's own browser download is never used (no ``playwright install``).
- ``page``: a fresh browser context (cookies, storage) and page per test, closed after it.

Helper: ``await screenshot(page, "dashboard")`` saves a full-page PNG as
``test-artifacts/screenshots/dashboard.png`` and returns its path. When a test fails, every page
still open in its context is saved as ``failed-<test>-<n>.png`` too, to see what the user saw.

Tests are marked ``@pytest.mark.browser``; run them alone with ``pytest -m browser``.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Error, Page, Playwright, async_playwright

REPO_ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO_ROOT / "test-artifacts" / "screenshots"
DEFAULT_CHROMIUM = "/usr/bin/chromium"

# Tests run as root (in CI and containers) where chromium's sandbox cannot start.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"]


def chromium_path() -> Path:
    return Path(os.environ.get("HIVE_TEST_CHROMIUM") or DEFAULT_CHROMIUM)


@pytest.fixture(scope="session")
async def playwright_driver() -> AsyncIterator[Playwright]:
    async with async_playwright() as driver:
        yield driver


@pytest.fixture(scope="session")
async def browser(playwright_driver: Playwright) -> AsyncIterator[Browser]:
    path = chromium_path()
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(
            f"chromium not found at {path}: run scripts/install-system-deps.sh (it installs "
            "Debian's chromium; `make test` runs it) or set HIVE_TEST_CHROMIUM",
            pytrace=False,
        )
    try:
        launched = await playwright_driver.chromium.launch(
            executable_path=str(path), headless=True, args=CHROMIUM_ARGS
        )
    except Error as e:
        pytest.fail(
            f"chromium at {path} did not start: {e.message}\n"
            "run scripts/install-system-deps.sh (Debian's chromium and its libraries)",
            pytrace=False,
        )
    try:
        yield launched
    finally:
        await launched.close()


_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.stash[_FAILED] = report.failed
    return report


@pytest.fixture
async def page(browser: Browser, request: pytest.FixtureRequest) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    # Expectations wait for the app's live updates; a slow CI box should not need retries.
    context.set_default_timeout(30_000)
    try:
        yield await context.new_page()
        if request.node.stash.get(_FAILED, False):
            for n, open_page in enumerate(context.pages):
                with contextlib.suppress(Error):
                    await screenshot(open_page, f"failed-{request.node.name}-{n}")
    finally:
        await context.close()


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


async def screenshot(page: Page, name: str) -> Path:
    """Save a full-page PNG as ``test-artifacts/screenshots/<name>.png``."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{_UNSAFE.sub('-', name)}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path
