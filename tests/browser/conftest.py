"""Browser journeys: Playwright (pytest-playwright) driving Debian's Chromium against a live
server on this test database. `make test` installs Chromium when it is missing (make
browser-deps); nothing is downloaded by Playwright itself."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.cache import cache
from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice
from playwright.sync_api import ConsoleMessage, Page, expect

from tests.support.factories import PASSWORD

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = Path(settings.VAR_DIR) / "screenshots"


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: run `make browser-deps` (apt-get install chromium)")
    return {**browser_type_launch_args, "executable_path": CHROMIUM, "args": CHROMIUM_ARGS, "headless": True}


@pytest.fixture(scope="session", autouse=True)
def _sync_orm_beside_playwright() -> Iterator[None]:
    # Playwright's sync API keeps an event loop in this thread; Django then refuses ORM calls
    # here as "async". The test code is plain synchronous code (the live server runs in its own
    # thread), and tests/conftest.py runs the browser tests last, so nothing else is affected.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    yield
    if previous is None:
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    else:
        os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    cache.clear()


@pytest.fixture
def csp_violations(page: Page) -> list[str]:
    """Console errors of the page: a Content-Security-Policy refusal shows up here."""
    errors: list[str] = []

    def record(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(message.text)

    page.on("console", record)
    return errors


def screenshot(page: Page, name: str) -> Path:
    """Save the page as var/screenshots/<name>.png (kept as the journey's artifact)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def totp_code(user: Any) -> str:
    device = TOTPDevice.objects.get(user=user)
    return f"{totp(device.bin_key, step=device.step, t0=device.t0, digits=device.digits):0{device.digits}d}"


def sign_in(page: Page, base_url: str, user: Any, *, next_path: str = "/admin/") -> None:
    """The real login form: username, password and the current TOTP code."""
    page.goto(f"{base_url}{next_path}")
    expect(page).to_have_url(re.compile(r"/admin/login/"))
    page.fill("#id_username", user.username)
    page.fill("#id_password", PASSWORD)
    page.fill("#id_otp_token", totp_code(user))
    page.click("input[type=submit]")
    expect(page.locator("#site-name")).to_have_text("Scriptline back office")
    expect(page).not_to_have_url(re.compile(r"/admin/login/"))
