"""The app served for real on a free loopback port, for the browser tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.common import free_port

FIXTURES = Path(__file__).parent.parent / "fixtures"
ROOT = Path(__file__).parent.parent.parent
CHROMIUM_PATH = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")


def chromium_missing() -> str | None:
    """Why the browser tests cannot run here (no chromium), or None. `make test` installs chromium itself
    where it can (as root, with apt-get); `BROWSER_TESTS=required` (CI) runs the tests whatever happens,
    so that they fail rather than skip."""
    if os.access(CHROMIUM_PATH, os.X_OK) or os.environ.get("BROWSER_TESTS") == "required":
        return None
    return (f"no chromium at {CHROMIUM_PATH}: install it (apt-get install chromium, or run `make test` as root) "
            "or point CHROMIUM_PATH at one")


@dataclass
class LiveServer:
    url: str
    admin_token: str

    def admin_get(self, path: str) -> httpx.Response:
        with httpx.Client(base_url=self.url, timeout=10) as client:
            return client.get(path, headers={"Authorization": f"Bearer {self.admin_token}"})

    def admin_post(self, path: str) -> httpx.Response:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            return client.post(path, headers={"Authorization": f"Bearer {self.admin_token}"})


@dataclass
class ConsoleErrors:
    """Console errors and uncaught exceptions of a page; a test may allow the ones it expects."""

    messages: list[str] = field(default_factory=list)
    allowed: list[str] = field(default_factory=list)

    def allow(self, fragment: str) -> None:
        self.allowed.append(fragment)

    def unexpected(self) -> list[str]:
        return [m for m in self.messages if not any(fragment in m for fragment in self.allowed)]


@contextmanager
def serve(env: dict[str, str], *, timeout: float = 60) -> Iterator[str]:
    """Run `tests.browser.serve` (the app behind uvicorn) in a subprocess; yield its URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(os.devnull, "wb") if os.environ.get("UI_TEST_QUIET") else None  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.browser.serve", "--port", str(port)],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=log,
        stderr=subprocess.STDOUT if log else None,
    )
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the app exited with status {process.returncode} before serving")
            try:
                if httpx.get(url + "/", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the app did not answer on {url} within {timeout} s")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if log:
            log.close()
