"""The app served for real (`python -m api migrate`, then `python -m api serve`) on a free loopback
port, with its embedded Postgres in a folder of its own: for the tests that kill the database, stop
the service or back it up while it serves."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psutil

from api.core.settings import REPO_ROOT
from bench.common import free_port, stop

ADMIN_TOKEN = "served-admin-token-0123456789abcdef0123456789"  # 32 characters at least (a rule on main)
T = TypeVar("T")


def run_async(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """`asyncio.run(main())` in a thread of its own: in a full run, Playwright's sync API keeps an event
    loop running in the main thread (tests/browser), where asyncio.run() would refuse to start."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(main())).result()


@dataclass
class Served:
    url: str
    data: Path
    process: subprocess.Popen
    env: dict[str, str]

    @property
    def pgdata(self) -> Path:
        return self.data / "pgdata"

    def postmaster_pid(self) -> int:
        return int((self.pgdata / "postmaster.pid").read_text().split()[0])

    def postmasters(self) -> list[psutil.Process]:
        """Running `postgres` processes of this pgdata that are no child of another: its servers."""
        found = []
        for p in psutil.process_iter(["name", "cwd", "ppid", "status"]):
            if p.info["name"] == "postgres" and p.info["cwd"] == str(self.pgdata) and \
                    p.info["status"] != psutil.STATUS_ZOMBIE:
                with_parent = psutil.Process(p.info["ppid"]) if psutil.pid_exists(p.info["ppid"]) else None
                if with_parent is None or with_parent.name() != "postgres":
                    found.append(p)
        return found

    def log_lines(self) -> list[dict]:
        """The service's JSON log lines so far (MediaPipe's plain lines on stderr are left out)."""
        lines = []
        for line in (self.data / "stdout").read_text(errors="replace").splitlines():
            if line.startswith("{"):
                lines.append(json.loads(line))
        return lines

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """`python -m api ARGS` with the service's settings (its data folder, hence its database)."""
        return subprocess.run([sys.executable, "-m", "api", *args], cwd=REPO_ROOT, env=self.env, timeout=timeout,
                              capture_output=True, text=True)

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, as a service manager stops it; the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)


def wait_healthy(url: str, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert process.poll() is None, "the service exited"
        assert time.monotonic() < deadline, "the service did not become healthy"
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)


@contextmanager
def served(workers: int = 1, **settings: str) -> Iterator[Served]:
    """Migrated and serving; stopped (SIGTERM, then SIGKILL if it hangs) and its folder removed at the end.

    The folder is outside pytest's temporary root: see `postgres_tmp` in tests/api/conftest.py.
    """
    data = Path(tempfile.mkdtemp(prefix="whatsmyage-served-"))
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "ADMIN_TOKEN", "OMP_NUM_THREADS",
                                                             "PROMETHEUS_MULTIPROC_DIR")}
    env |= {"WMA_DATA_DIR": str(data), "WMA_FRONTEND_DIR": str(data / "none"), "WMA_RATE_LIMIT_PER_MINUTE": "0",
            "ADMIN_TOKEN": ADMIN_TOKEN, "OMP_NUM_THREADS": "1", "WMA_CONCURRENCY_SLOTS": "2"} | settings
    port = free_port()
    process = None
    try:
        subprocess.run([sys.executable, "-m", "api", "migrate"], cwd=REPO_ROOT, env=env, check=True, timeout=120,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with open(data / "stdout", "wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "api", "serve", "--port", str(port), "--workers", str(workers)],
                cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, process)
        yield Served(url=url, data=data, process=process, env=env)
    finally:
        if process is not None:
            stop(process, 60)
        stop_embedded(data / "pgdata")
        shutil.rmtree(data, ignore_errors=True)


def stop_embedded(pgdata: Path) -> None:
    """Stop an embedded server a test left running (a failed test), so that no server outlives its folder."""
    if not (pgdata / "postmaster.pid").exists():
        return
    from api.storage import embedded

    postgres = embedded.EmbeddedPostgres(pgdata)
    postgres.stop()
