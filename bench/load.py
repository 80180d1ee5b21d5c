"""Many uploads at once against the served app on loopback, good ones and bad ones mixed.

    .venv/bin/python -m bench.load [--uploads 100] [--url http://127.0.0.1:8000]

Without --url it migrates and serves the app itself (`python -m api migrate`, `python -m api serve`)
on a free port, with an embedded Postgres in a temporary folder (or `--database-url`), the rate
limit off (every upload comes from one address) and a random admin token, and stops it at the end.
With --url, ADMIN_TOKEN must be the server's, to count the stored rows.

All uploads start at once, each on its own connection: submissions with and without a face,
/predict and /detect with photos small and large, and refusals (decompression bomb, not an image,
truncated, JSON body, unterminated multipart, two files). It prints the answers by kind and status,
latency percentiles, the server's resident memory before, at its peak and after, and the rows
stored against the 201s answered. Expected: no 5xx but 503 (with Retry-After), every request
answered (no hang), memory back near where it started, rows == 201s. Exit status 1 otherwise.
Everything is bounded in time (--timeout per request, an alarm for the whole run).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import secrets
import shutil
import signal
import struct
import subprocess
import tempfile
import time
import uuid
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import psutil
from PIL import Image

from bench.common import ROOT, free_port, get_json, pct, read_head, server_env, start, stop, verdict, wait_healthy

FIXTURES = ROOT / "tests" / "fixtures"
FORM = {"first_name": "Eileen", "true_age": "42", "consent": "true"}


# --- what is sent -------------------------------------------------------------------------------------


def jpeg(img: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def large_photo() -> bytes:
    """A 3000x2000 phone-sized JPEG of about 2.5 MB: the astronaut on a noisy background."""
    rng = np.random.default_rng(6)
    canvas = Image.fromarray(rng.integers(0, 255, (2000, 3000, 3), dtype=np.uint8))
    canvas.paste(Image.open(FIXTURES / "astronaut.png").convert("RGB").resize((1200, 1200)), (900, 400))
    return jpeg(canvas, 85)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims width x height and has no pixels: a decompression bomb of 57 bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + chunk(
        b"IEND", b"")


def part(name: str, value: bytes, filename: str | None = None, ctype: str | None = None) -> bytes:
    disposition = f'Content-Disposition: form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
    head = disposition + (f"\r\nContent-Type: {ctype}" if ctype else "")
    return head.encode() + b"\r\n\r\n" + value + b"\r\n"


def multipart(parts: list[bytes], boundary: str, close: bool = True) -> bytes:
    body = b"".join(b"--" + boundary.encode() + b"\r\n" + p for p in parts)
    return body + (b"--" + boundary.encode() + b"--\r\n" if close else b"")


@dataclass(frozen=True)
class Kind:
    name: str
    path: str
    expected: frozenset[int]  # besides 503 + Retry-After, always allowed under load
    body: Callable[[str], tuple[bytes, str]]  # boundary -> (body, content type)


def kinds() -> list[Kind]:
    face_png = (FIXTURES / "astronaut.png").read_bytes()
    noface_png = (FIXTURES / "coffee.png").read_bytes()
    face_jpeg = jpeg(Image.open(FIXTURES / "astronaut.png").convert("RGB").resize((640, 640)))
    big = large_photo()
    bomb = png_header_only(20000, 20000)
    truncated = face_jpeg[: len(face_jpeg) * 6 // 10]

    def upload(data: bytes, name: str, ctype: str, fields: dict[str, str] | None = None, *, twice: bool = False,
               close: bool = True) -> Callable[[str], tuple[bytes, str]]:
        def build(boundary: str) -> tuple[bytes, str]:
            parts = [part(k, v.encode()) for k, v in (fields or {}).items()]
            parts += [part("image", data, name, ctype)] * (2 if twice else 1)
            return multipart(parts, boundary, close), f"multipart/form-data; boundary={boundary}"
        return build

    return [
        Kind("submit face", "/submissions", frozenset({201}), upload(face_png, "me.png", "image/png", FORM)),
        Kind("submit large face", "/submissions", frozenset({201}), upload(big, "big.jpg", "image/jpeg", FORM)),
        Kind("submit no face", "/submissions", frozenset({422}), upload(noface_png, "c.png", "image/png", FORM)),
        Kind("predict face", "/predict", frozenset({200}), upload(face_jpeg, "f.jpg", "image/jpeg")),
        Kind("predict large", "/predict", frozenset({200}), upload(big, "big.jpg", "image/jpeg")),
        Kind("detect face", "/detect", frozenset({200}), upload(face_png, "f.png", "image/png")),
        Kind("bomb", "/predict", frozenset({413}), upload(bomb, "b.png", "image/png")),
        Kind("not an image", "/detect", frozenset({415}), upload(os.urandom(50_000), "r.jpg", "image/jpeg")),
        Kind("truncated", "/submissions", frozenset({422}), upload(truncated, "t.jpg", "image/jpeg", FORM)),
        Kind("json body", "/predict", frozenset({415}), lambda b: (json.dumps({"image": "x"}).encode(),
                                                                  "application/json")),
        Kind("unterminated", "/submissions", frozenset({400}),
             upload(face_png, "me.png", "image/png", FORM, close=False)),
        Kind("two files", "/predict", frozenset({422}), upload(face_jpeg, "f.jpg", "image/jpeg", twice=True)),
    ]


# --- a minimal HTTP/1.1 client -----------------------------------------------------------------------


@dataclass
class Answer:
    kind: str
    status: int | str  # an HTTP status, or the name of what went wrong instead
    seconds: float
    retry_after: str | None = None
    body: bytes = b""


async def send(host: str, port: int, kind: Kind, seconds: float, start: asyncio.Event) -> Answer:
    body, ctype = kind.body(uuid.uuid4().hex)
    head = (f"POST {kind.path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    await start.wait()
    t = time.perf_counter()
    try:
        async with asyncio.timeout(seconds):
            reader, writer = await asyncio.open_connection(host, port)
            try:
                writer.write(head + body)
                with contextlib.suppress(ConnectionError):  # answered (413, say) and closed before the end
                    await writer.drain()
                status_line, headers = await read_head(reader)
                data = await reader.readexactly(int(headers.get("content-length", "0")))
            finally:
                writer.close()
        return Answer(kind.name, int(status_line.split()[1]), time.perf_counter() - t, headers.get("retry-after"),
                      data)
    except TimeoutError:
        return Answer(kind.name, "timeout", time.perf_counter() - t)
    except (OSError, asyncio.IncompleteReadError, ValueError, IndexError) as e:
        return Answer(kind.name, type(e).__name__, time.perf_counter() - t)


async def run_load(host: str, port: int, uploads: int, seconds: float, server: psutil.Process | None,
                   result: LoadResult) -> None:
    """One round: `uploads` requests at once; their answers and the memory go into `result`."""
    all_kinds = kinds()
    start = asyncio.Event()
    tasks = [asyncio.create_task(send(host, port, all_kinds[i % len(all_kinds)], seconds, start))
             for i in range(uploads)]

    async def sample_memory() -> None:
        while True:
            result.rss_peak = max(result.rss_peak, rss(server))
            await asyncio.sleep(0.05)

    sampler = asyncio.create_task(sample_memory())
    t0 = time.perf_counter()
    start.set()
    answers = list(await asyncio.gather(*tasks))
    result.rounds.append(time.perf_counter() - t0)
    result.answers += answers
    sampler.cancel()
    await asyncio.sleep(2.0)  # let the server settle: spooled files closed, threads idle
    result.rss_after.append(rss(server))


def rss(server: psutil.Process | None) -> int:
    try:
        return server.memory_info().rss if server else 0
    except psutil.Error:
        return 0


# --- what is checked -----------------------------------------------------------------------------------


@dataclass
class LoadResult:
    answers: list[Answer] = field(default_factory=list)
    rounds: list[float] = field(default_factory=list)  # seconds until every answer was in, per round
    rss_before: int = 0
    rss_peak: int = 0
    rss_after: list[int] = field(default_factory=list)  # 2 s after each round
    rows_before: int = 0
    rows_after: int = 0

    @property
    def created(self) -> list[str]:
        return [json.loads(a.body)["id"] for a in self.answers if a.status == 201]

    def problems(self, expected: dict[str, frozenset[int]]) -> list[str]:
        out = []
        for a in self.answers:
            if a.status == 503:
                if not a.retry_after:
                    out.append(f"{a.kind}: 503 without Retry-After")
            elif a.status not in expected[a.kind]:
                out.append(f"{a.kind}: {a.status}")
        if self.rows_after - self.rows_before != len(self.created):
            out.append(f"rows stored {self.rows_after - self.rows_before} != 201s answered {len(self.created)}")
        if self.rss_before and self.rss_after[-1] > self.rss_before * 1.5 + 100 * 2**20:
            out.append(f"memory not back near its start: {self.rss_before >> 20} -> {self.rss_after[-1] >> 20} MiB")
        if self.rss_before and len(self.rss_after) > 1 and self.rss_after[-1] > self.rss_after[0] * 1.1 + 50 * 2**20:
            out.append(f"memory grows round after round: {[m >> 20 for m in self.rss_after]} MiB")
        return out


def report(result: LoadResult) -> str:
    rounds = ", ".join(f"{s:.2f}" for s in result.rounds)
    lines = [f"{len(result.answers) // len(result.rounds)} uploads at once, {len(result.rounds)} round(s), "
             f"every one answered within {rounds} s"]
    by_kind: dict[str, Counter] = {}
    for a in result.answers:
        by_kind.setdefault(a.kind, Counter())[a.status] += 1
    for kind, statuses in by_kind.items():
        times = [a.seconds for a in result.answers if a.kind == kind]
        lines.append(f"  {kind:18s} {dict(sorted(statuses.items(), key=str))!s:28s} p50 {pct(times, 50) * 1000:6.0f} ms"
                     f"   max {max(times) * 1000:6.0f} ms")
    totals = Counter(a.status for a in result.answers)
    times = [a.seconds for a in result.answers]
    lines.append(f"  all: {dict(sorted(totals.items(), key=str))}; latency p50 {pct(times, 50) * 1000:.0f} ms, "
                 f"p95 {pct(times, 95) * 1000:.0f} ms, p99 {pct(times, 99) * 1000:.0f} ms")
    if result.rss_before:
        after = ", ".join(f"{m / 2**20:.0f}" for m in result.rss_after)
        lines.append(f"  server RSS: {result.rss_before / 2**20:.0f} MiB before, {result.rss_peak / 2**20:.0f} at the "
                     f"peak, {after} 2 s after each round")
    lines.append(f"  rows stored: {result.rows_after - result.rows_before}; 201s answered: {len(result.created)}")
    return "\n".join(lines)


# --- the server ------------------------------------------------------------------------------------------


def count_rows(url: str, token: str) -> int:
    status, body = get_json(url + "/submissions?limit=1", token)
    if status != 200:
        raise SystemExit(f"cannot count the stored rows (GET /submissions: {status}); is ADMIN_TOKEN the server's?")
    return int(body["total"])


class Server:
    """`python -m api migrate` then `python -m api serve` on a free port, stopped with SIGTERM."""

    def __init__(self, database_url: str | None, slots: int | None, log: Path | None = None, workers: int = 1,
                 extra_env: dict[str, str] | None = None) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="whatsmyage-load-"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = secrets.token_urlsafe(32)
        env = server_env(self.tmp, ADMIN_TOKEN=self.token)
        if database_url:
            env["DATABASE_URL"] = database_url
        if slots:
            env["WMA_CONCURRENCY_SLOTS"] = str(slots)
        self.env = env | (extra_env or {})
        self.workers = workers
        self.log = open(log or self.tmp / "server.log", "wb")  # noqa: SIM115
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> Server:
        # An embedded database is new: it needs its tables.
        self.proc = start(self.env, self.port, self.log, workers=self.workers, migrate="DATABASE_URL" not in self.env)
        wait_healthy(self.url, 120, self.proc)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            stop(self.proc)
        self.log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def load(url: str, token: str, uploads: int, timeout: float, server_pid: int | None, rounds: int = 1) -> LoadResult:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    server = psutil.Process(server_pid) if server_pid else None
    result = LoadResult(rows_before=count_rows(url, token), rss_before=rss(server))
    for _ in range(rounds):
        asyncio.run(run_load(host, port, uploads, timeout, server, result))
    result.rows_after = count_rows(url, token)
    return result


def expected_statuses() -> dict[str, frozenset[int]]:
    return {k.name: k.expected for k in kinds()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--uploads", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2, help="rounds of --uploads (memory should not grow)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds one request may take")
    parser.add_argument("--url", help="an already running server (default: start one); needs ADMIN_TOKEN")
    parser.add_argument("--database-url", help="the started server's database (default: a new embedded one)")
    parser.add_argument("--slots", type=int, help="WMA_CONCURRENCY_SLOTS of the started server")
    args = parser.parse_args()
    signal.alarm(int(args.timeout * args.rounds + 300))  # a hard bound on the whole run, start-up and shutdown included

    print(f"{os.cpu_count()} CPUs; load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.url:
        token = os.environ.get("ADMIN_TOKEN", "")
        result = load(args.url, token, args.uploads, args.timeout, None, args.rounds)
    else:
        with Server(args.database_url, args.slots) as server:
            assert server.proc is not None
            result = load(server.url, server.token, args.uploads, args.timeout, server.proc.pid, args.rounds)
    print(report(result))
    verdict(result.problems(expected_statuses()), "ok: no 5xx but 503, no hang, rows == 201s")


if __name__ == "__main__":
    main()
