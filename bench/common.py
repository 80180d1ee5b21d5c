"""What the benchmarks that serve the app share: its environment, starting and stopping it, waiting for
/healthz, a keep-alive HTTP/1.1 client on asyncio streams and percentiles.

The benchmarks run from the repository root as modules (`.venv/bin/python -m bench.http_latency`), so
that `bench`, `api` and `ml` import without touching sys.path.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, NoReturn
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent


# --- the server ------------------------------------------------------------------------------------------


class Served:
    """A server known by its `url` (a dataclass field of the class that mixes this in): where to connect."""

    url: str

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or 80


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(data: Path, **settings: str) -> dict[str, str]:
    """This process's environment for a server keeping its data (and embedded Postgres) in `data`: without
    DATABASE_URL, without the frontend and with the rate limit off (all the load comes from one address)."""
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env |= {"WMA_DATA_DIR": str(data), "WMA_FRONTEND_DIR": str(data / "none"), "WMA_RATE_LIMIT_PER_MINUTE": "0"}
    return env | settings


def start(env: dict[str, str], port: int, log: IO[bytes], *, root: Path = ROOT, workers: int = 1,
          migrate: bool = True) -> subprocess.Popen:
    """`python -m api migrate` (unless `migrate` is false), then `python -m api serve` on `port`, in the
    checkout at `root`; their output goes to `log`."""
    if migrate:
        subprocess.run([sys.executable, "-m", "api", "migrate"], cwd=root, env=env, stdout=log, stderr=log,
                       check=True, timeout=120)
    command = [sys.executable, "-m", "api", "serve", "--port", str(port)]
    if workers != 1:  # an older checkout (a --baseline) may not know the option
        command += ["--workers", str(workers)]
    return subprocess.Popen(command, cwd=root, env=env, stdout=log, stderr=log)


def stop(proc: subprocess.Popen, timeout: float = 30) -> int | None:
    """SIGTERM, then SIGKILL after `timeout` seconds; the exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


def get_json(url: str, token: str | None = None, timeout: float = 5) -> tuple[int, dict]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, {}


def wait_healthy(url: str, timeout: float, proc: subprocess.Popen | None = None) -> None:
    """Until /healthz answers 200; exits if `proc` (the server) exits first or `timeout` passes."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}")
        try:
            if get_json(url + "/healthz", timeout=2)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"server not healthy after {timeout:.0f} s")


# --- the client: keep-alive HTTP/1.1 on asyncio streams ----------------------------------------------------


async def read_head(reader: asyncio.StreamReader) -> tuple[str, dict[str, str]]:
    """The status line and the headers (names in lower case) of an answer."""
    raw = await reader.readuntil(b"\r\n\r\n")
    lines = raw.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    return lines[0], headers


class Connection:
    """One keep-alive HTTP/1.1 connection; reconnects when the server has closed it."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, raw: bytes) -> int:
        status, _, _ = await self.exchange(raw)
        return status

    async def exchange(self, raw: bytes) -> tuple[int, dict[str, str], bytes]:
        """Sends a whole request; its status, headers and body."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(raw)
        status_line, headers = await read_head(self.reader)
        body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return int(status_line.split()[1]), headers, body

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None


# --- figures ---------------------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (nearest rank); NaN for no values."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))] if ordered else float("nan")


def verdict(problems: list[str], ok: str) -> NoReturn:
    """Prints each problem (or `ok` when there is none) and exits: status 1 with problems, 0 without."""
    for problem in problems:
        print("PROBLEM:", problem)
    print(ok if not problems else f"{len(problems)} problem(s)")
    sys.exit(1 if problems else 0)
