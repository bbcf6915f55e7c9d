"""A real browser (Debian's Chromium, driven by Playwright) against the shared session mesh.

Chromium cannot be downloaded by Playwright here: it is the system's `/usr/bin/chromium` (or
GENMESH_CHROMIUM), installed by `make test` (tests/support/install_chromium.sh) when missing.
Without it these tests skip on a developer machine and FAIL under CI (the CI variable set), so a
CI run can never pass without having run them. Chromium runs headless with the flags that keep
it off the network. GENMESH_CONSOLE_TEST_URL and _KEY point them at a running mesh instead of
the session's. Every test gets a fresh context (no stored key) at a desktop and a phone size,
fails on any error in the browser's console, and saves screenshots under .build/screenshots/.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = Path(os.environ.get("GENMESH_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parents[3] / ".build" / "screenshots"
SIZES = {"desktop": {"width": 1280, "height": 800}, "phone": {"width": 390, "height": 844}}


def _missing(what: str) -> None:
    message = f"{what}: the browser tests need it (make test installs Chromium: tests/support/install_chromium.sh)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def gateway_url(request: pytest.FixtureRequest) -> str:
    """The shared session mesh; or a mesh already running (`genmesh up`) named by
    GENMESH_CONSOLE_TEST_URL and GENMESH_CONSOLE_TEST_KEY, to iterate on the console quickly."""
    url = os.environ.get("GENMESH_CONSOLE_TEST_URL")
    return url.rstrip("/") if url else f"http://{request.getfixturevalue('mesh').url}"


@pytest.fixture(scope="session")
def api_key(request: pytest.FixtureRequest) -> str:
    return os.environ.get("GENMESH_CONSOLE_TEST_KEY") or request.getfixturevalue("mesh").api_key


@pytest.fixture
def browser() -> Iterator[object]:
    """Chromium for one test. Not for the session: Playwright's sync API keeps an asyncio loop
    running in this thread while it is open, which would break every async test after it."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the playwright package is not installed (pip install -e '.[dev]')")
    if not CHROMIUM.exists():
        _missing(f"no Chromium at {CHROMIUM}")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS)
        try:
            yield browser
        finally:
            browser.close()


class Console:
    """One browser tab on the console at one size, with the console errors it saw."""

    def __init__(self, page, base_url: str, size: str, test_name: str) -> None:
        self.page = page
        self.base_url = base_url
        self.size = size
        self.name = re.sub(r"[^A-Za-z0-9_.-]+", "-", test_name).strip("-")
        self.errors: list[str] = []
        self.allowed_errors: list[str] = []  # substrings of console errors a test expects (a refused key)
        page.on("console", lambda message: message.type == "error" and self.errors.append(message.text))
        page.on("pageerror", lambda error: self.errors.append(f"uncaught: {error}"))

    def open(self, route: str = "") -> None:
        self.page.goto(f"{self.base_url}/ui/{route}")

    def enter_key(self, key: str, remember: bool = False) -> None:
        self.page.get_by_label("API key").fill(key)
        if remember:
            self.page.get_by_label("Remember on this device").check()
        self.page.get_by_role("button", name="Open the console").click()

    def shot(self, what: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{self.name}-{what}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def unexpected_errors(self) -> list[str]:
        return [error for error in self.errors if not any(allowed in error for allowed in self.allowed_errors)]


@pytest.fixture(params=list(SIZES), ids=list(SIZES))
def console(request: pytest.FixtureRequest, browser, gateway_url: str) -> Iterator[Console]:
    size = request.param
    context = browser.new_context(viewport=SIZES[size], is_mobile=size == "phone", has_touch=size == "phone")
    context.set_default_timeout(30_000)
    page = context.new_page()
    tab = Console(page, gateway_url, size, request.node.name)
    try:
        yield tab
        tab.shot("end")
        assert tab.unexpected_errors() == [], "errors in the browser console"
    finally:
        context.close()
