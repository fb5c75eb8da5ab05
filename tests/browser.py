"""Headless Chromium (Debian's package, as .ci/run installs it) driven by Playwright, for browser tests."""

import shutil
from contextlib import contextmanager

import pytest

# as the machine notes say: no background networking on a closed network, a fresh profile, no sandbox as root
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("browser tests need Debian's chromium: apt-get install chromium (.ci/run installs it)")
    return path


@contextmanager
def page(width: int = 1200, height: int = 900):
    """A Chromium page that records script errors and dialogs (an XSS would open or set one)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=ARGS)
        try:
            pg = browser.new_page(viewport={"width": width, "height": height})
            pg.errors, pg.dialogs = [], []
            pg.on("pageerror", lambda e: pg.errors.append(str(e)))
            pg.on("console", lambda m: pg.errors.append(m.text) if m.type == "error" else None)
            pg.on("dialog", lambda d: (pg.dialogs.append(d.message), d.dismiss()))
            yield pg
        finally:
            browser.close()
