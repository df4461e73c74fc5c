"""A real browser for tests: Debian's Chromium (installed by .ci/run), driven by Playwright.

Playwright never downloads a browser here: it launches the system's `chromium`.
Every page records what its console says at error level and any uncaught error,
so a test can assert that the browser saw none.
"""
from __future__ import annotations

import contextlib
import shutil
from collections.abc import AsyncIterator

from playwright.async_api import Browser, Page, async_playwright

PHONE_WIDTH = 390


def chromium_path() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, "Debian's chromium is required for the browser tests (.ci/run installs it)"
    return found


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium_path(), headless=True,
                                                   args=["--no-sandbox", "--disable-gpu"])
        try:
            yield browser
        finally:
            await browser.close()


class Watched:
    """A page and every error its console reported."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.errors: list[str] = []
        page.on("console", lambda message: self.errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: self.errors.append(f"uncaught: {error}"))


async def open_page(browser: Browser, url: str, width: int = 1000, height: int = 700) -> Watched:
    context = await browser.new_context(viewport={"width": width, "height": height})
    page = await context.new_page()
    page.set_default_timeout(10_000)
    watched = Watched(page)
    await page.goto(url)
    return watched
