"""HTTP load on loopback against the served app: /predict throughput and latency, /healthz alongside.

    .venv/bin/python bench/http.py [--duration 10] [--url http://127.0.0.1:8000]

Without --url it migrates and serves the app itself (`python -m api migrate`, `python -m api serve`)
on a free port with an embedded Postgres in a temporary folder, and stops it at the end. Then:
/predict with a 640x480 one-face JPEG at concurrency 1, 8 and 32 (requests/s, p50/p95/p99, errors by
status, server CPU per request), /healthz latency measured all the while (one request every 20 ms on
its own connection: a blocked event loop shows up there), and one-at-a-time /predict for a 512x512
PNG. Last, the predictor alone in this process, for comparison. Everything is bounded in time.

The client is a minimal HTTP/1.1 keep-alive client on asyncio streams, so that the load generator
costs little CPU next to the server on a small machine.
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file is bench/http.py: take bench/ off the import path, or it would shadow the standard `http`.
if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    del sys.path[0]

import argparse
import asyncio
import contextlib
import io
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import psutil
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
ASTRONAUT = ROOT / "tests" / "fixtures" / "astronaut.png"


def photo_640x480_jpeg() -> bytes:
    img = Image.open(ASTRONAUT).convert("RGB").crop((0, 0, 512, 384)).resize((640, 480), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def multipart_request(host: str, path: str, name: str, data: bytes, ctype: str) -> bytes:
    boundary = uuid.uuid4().hex
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
            f"Content-Type: {ctype}\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    return head + body


class Connection:
    """One keep-alive HTTP/1.1 connection; reconnects when the server closes it."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, raw: bytes) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        await self.reader.readexactly(int(headers.get("content-length", "0")))
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return status

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None


@dataclass
class Run:
    latencies: list[float] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    health: list[float] = field(default_factory=list)
    health_statuses: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    server_cpu: float = 0.0


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


async def load(host: str, port: int, raw: bytes, health_raw: bytes, concurrency: int, duration: float,
               server: psutil.Process | None) -> Run:
    run = Run()
    deadline = time.perf_counter() + duration

    async def client(raw: bytes, latencies: list[float], statuses: Counter, pause: float) -> None:
        """One keep-alive client sending `raw` until the deadline; a failed request counts by its error."""
        conn = Connection(host, port)
        while time.perf_counter() < deadline:
            t = time.perf_counter()
            try:
                status = await asyncio.wait_for(conn.request(raw), 30)
            except (OSError, asyncio.IncompleteReadError, TimeoutError) as e:
                status = type(e).__name__
                await conn.close()
            latencies.append(time.perf_counter() - t)
            statuses[status] += 1
            if pause:
                await asyncio.sleep(pause)
        await conn.close()

    cpu0 = sum(server.cpu_times()[:2]) if server else 0.0
    t0 = time.perf_counter()
    # /healthz every 20 ms beside the load: its latency shows whether the event loop is ever blocked.
    prober = client(health_raw, run.health, run.health_statuses, 0.02)
    await asyncio.gather(prober, *(client(raw, run.latencies, run.statuses, 0) for _ in range(concurrency)))
    run.seconds = time.perf_counter() - t0
    run.server_cpu = (sum(server.cpu_times()[:2]) - cpu0) if server else float("nan")
    return run


async def sequential(host: str, port: int, raw: bytes, n: int) -> tuple[list[float], Counter]:
    conn = Connection(host, port)
    times, statuses = [], Counter()
    for _ in range(n):
        t = time.perf_counter()
        statuses[await conn.request(raw)] += 1
        times.append(time.perf_counter() - t)
    await conn.close()
    return times, statuses


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, timeout: float) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"server not healthy after {timeout:.0f} s")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:7.1f}"


def predictor_alone(jpeg: bytes, png: bytes, seconds: float) -> None:
    """The same predictor as the server (same settings and thread rule), without HTTP."""
    from concurrent.futures import ThreadPoolExecutor

    from api.config import Settings
    from api.main import load_predictor

    settings = Settings()
    predictor = load_predictor(settings)
    for _ in range(10):
        predictor.predict(jpeg)
    for name, data in (("640x480 JPEG", jpeg), ("512x512 PNG", png)):
        times, stages = [], Counter()
        for _ in range(40):
            t = time.perf_counter()
            result = predictor.predict(data)
            times.append(time.perf_counter() - t)
            stages.update(result.timings)
        parts = ", ".join(f"{k} {v / 40 * 1000:.1f}" for k, v in stages.items())
        print(f"  predict {name}, one at a time: median {statistics.median(times) * 1000:.1f} ms ({parts})")
    with ThreadPoolExecutor(settings.concurrency_slots) as pool:
        done, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            list(pool.map(predictor.predict, [jpeg] * settings.concurrency_slots * 4))
            done += settings.concurrency_slots * 4
        rate = done / (time.perf_counter() - t0)
    print(f"  predict 640x480 JPEG, {settings.concurrency_slots} threads: {rate:.1f} /s")
    predictor.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per concurrency level")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--url", help="an already running server (default: start one)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the predictor-alone figures")
    args = parser.parse_args()
    # A hard bound, whatever happens: every phase plus start-up and shutdown.
    signal.alarm(int(args.duration * len(args.concurrency) + 240))

    print(f"CPU: {cpu_model()}, {os.cpu_count()} logical CPUs; Python {platform.python_version()}")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    jpeg, png = photo_640x480_jpeg(), ASTRONAUT.read_bytes()

    proc, tmp, server = None, None, None
    url = args.url
    if url is None:
        tmp = Path(tempfile.mkdtemp(prefix="whatsmyage-bench-"))
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL",)}
        # The rate limit off: all the load comes from one address.
        env |= {"WMA_DATA_DIR": str(tmp), "WMA_FRONTEND_DIR": str(tmp / "none"), "WMA_RATE_LIMIT_PER_MINUTE": "0"}
        log = open(tmp / "server.log", "wb")  # noqa: SIM115
        subprocess.run([sys.executable, "-m", "api", "migrate"], cwd=ROOT, env=env, stdout=log, stderr=log,
                       check=True, timeout=120)
        proc = subprocess.Popen([sys.executable, "-m", "api", "serve", "--port", str(port)], cwd=ROOT, env=env,
                                stdout=log, stderr=log)
        server = psutil.Process(proc.pid)
    try:
        wait_healthy(url, 120)
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        predict_jpeg = multipart_request(host, "/predict", "face.jpg", jpeg, "image/jpeg")
        predict_png = multipart_request(host, "/predict", "face.png", png, "image/png")
        health = f"GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
        if server is not None:
            print(f"server: pid {server.pid}, RSS {server.memory_info().rss / 2**20:.0f} MiB after start")
        asyncio.run(sequential(host, port, predict_jpeg, 20))  # warm-up

        print(f"\n/predict, 640x480 JPEG ({len(jpeg) // 1024} KiB), {args.duration:.0f} s per level")
        print("  conc   req/s   p50 ms   p95 ms   p99 ms   server CPU ms/req   errors        /healthz p99 ms (n)")
        for c in args.concurrency:
            run = asyncio.run(load(host, port, predict_jpeg, health, c, args.duration, server))
            ok = run.statuses.get(200, 0)
            errors = {k: v for k, v in run.statuses.items() if k != 200}
            hbad = {k: v for k, v in run.health_statuses.items() if k != 200}
            cpu = run.server_cpu / max(1, sum(run.statuses.values())) * 1000
            print(f"  {c:4d} {ok / run.seconds:7.1f}  {ms(pct(run.latencies, 50))}  {ms(pct(run.latencies, 95))}  "
                  f"{ms(pct(run.latencies, 99))}   {cpu:12.1f}        {str(errors or 'none'):12s}  "
                  f"{ms(pct(run.health, 99))} ({len(run.health)}{', ' + str(hbad) if hbad else ''})")

        times, statuses = asyncio.run(sequential(host, port, predict_png, 50))
        print(f"\n/predict, 512x512 PNG ({len(png) // 1024} KiB), one at a time: median "
              f"{statistics.median(times) * 1000:.1f} ms, p95 {pct(times, 95) * 1000:.1f} ms, "
              f"statuses {dict(statuses)}")
        if server is not None:
            print(f"server RSS after the load: {server.memory_info().rss / 2**20:.0f} MiB")
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
            assert tmp is not None
            stopped = not (tmp / "pgdata" / "postmaster.pid").exists()
            print(f"server stopped (exit {proc.returncode}); embedded Postgres stopped: {stopped}")
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if not args.no_baseline:
        print("\nThe predictor alone, in this process (no HTTP):")
        predictor_alone(jpeg, png, min(args.duration, 5.0))


if __name__ == "__main__":
    main()
