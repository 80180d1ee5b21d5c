"""Browser fixtures: Debian's chromium driven by Playwright, and the app served for real."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest
from playwright.sync_api import ConsoleMessage, Page

from tests.browser.server import ConsoleErrors, LiveServer, serve


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict) -> dict:
    # Debian's chromium, never a downloaded browser (see ../shared/docs/toolchain.md).
    return {
        **browser_type_launch_args,
        "executable_path": os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"),
        "args": [
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
        ],
    }


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The app as `make run` serves it, with an embedded Postgres of its own in a temporary folder."""
    admin_token = secrets.token_urlsafe(24)
    env = {
        "ADMIN_TOKEN": admin_token,
        "DATABASE_URL": "",  # never the developer's or CI's database: rows here are really committed
        "WMA_DATA_DIR": str(tmp_path_factory.mktemp("ui-data")),
        "WMA_CORS_ORIGINS": "",
    }
    with serve(env) as url:
        yield LiveServer(url=url, admin_token=admin_token)


@pytest.fixture(scope="session")
def base_url(live_server: LiveServer) -> str:
    # Replaces pytest-playwright's fallback (a session fixture defined as an instance method, which
    # pytest 9 warns about); relative URLs in page.goto() go to the live server.
    return live_server.url


@pytest.fixture(autouse=True)
def console_errors(request: pytest.FixtureRequest) -> Iterator[ConsoleErrors]:
    """Fail a browser test on any console error or uncaught exception it did not allow."""
    errors = ConsoleErrors()
    if "page" not in request.fixturenames:
        yield errors
        return
    page: Page = request.getfixturevalue("page")

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.messages.append(message.text)

    page.on("console", on_console)
    page.on("pageerror", lambda error: errors.messages.append(f"uncaught: {error}"))
    yield errors
    assert errors.unexpected() == [], "console errors"
