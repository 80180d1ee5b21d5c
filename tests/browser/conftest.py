"""Browser fixtures: Debian's chromium driven by Playwright, and the app served for real."""

from __future__ import annotations

import secrets
import tempfile
from collections.abc import Iterator

import pytest
from playwright.sync_api import ConsoleMessage, Page

from tests.api import conftest as api_fixtures
from tests.browser.server import CHROMIUM_PATH, ConsoleErrors, LiveServer, serve

# The API tests' database fixtures, reused: the app under test gets a real, migrated Postgres (an
# embedded one for the run, or a scratch database on TEST_DATABASE_URL's server).
postgres_tmp = api_fixtures.postgres_tmp
database_url = api_fixtures.database_url
migrated_url = api_fixtures.migrated_url


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict) -> dict:
    # Debian's chromium, never a downloaded browser (see ../shared/docs/toolchain.md).
    return {
        **browser_type_launch_args,
        "executable_path": CHROMIUM_PATH,
        "args": [
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
        ],
    }


# Autouse, so that it is set up before pytest-playwright's `playwright` fixture: Playwright's sync
# API keeps an event loop running in this thread, and the database fixtures call asyncio.run().
@pytest.fixture(scope="session", autouse=True)
def live_server(migrated_url: str) -> Iterator[LiveServer]:
    """The app served by uvicorn in a subprocess, with the production CSP, on the tests' database."""
    admin_token = secrets.token_urlsafe(24)
    with tempfile.TemporaryDirectory(prefix="whatsmyage-ui-") as data_dir:
        env = {
            "ADMIN_TOKEN": admin_token,
            "DATABASE_URL": migrated_url,
            "WMA_DATA_DIR": data_dir,
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
