"""Headless Chromium (Debian's `chromium` package) driven by Playwright, for the editor tests.

Nothing downloads a browser: the tests use /usr/bin/chromium (or CHROMIUM_PATH) and skip with
the reason when it is missing; CI installs it with apt (.ci/run).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, Route, sync_playwright

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
LOCAL = ("http://127.0.0.1:", "blob:", "data:")


def chromium_path() -> Path | None:
    found = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"
    return Path(found) if Path(found).exists() else None


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = chromium_path()
    if executable is None:
        reason = "no chromium: apt-get install chromium (CI does)"
        if os.environ.get("INPAINT_REQUIRE_BROWSER") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(executable), headless=True, args=CHROMIUM_ARGS
        )
        yield launched
        launched.close()


class OfflinePage:
    """A page whose requests to any host but the server are blocked and recorded."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.external: list[str] = []
        self.errors: list[str] = []
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.route("**/*", self._route)

    def _route(self, route: Route) -> None:
        if route.request.url.startswith(LOCAL):
            route.continue_()
        else:
            self.external.append(route.request.url)
            route.abort()
