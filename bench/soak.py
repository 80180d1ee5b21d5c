"""Soak: many requests at a steady concurrency against the served app, watching what must stay flat.

    .venv/bin/python -m bench.soak [--requests 20000] [--concurrency 8] [--mix all|predict] [--every 1000]

Without --url it migrates and serves the app itself (`python -m api migrate`, `python -m api serve`,
bench/load.py's Server) on a free port, with an embedded Postgres in a temporary folder (or
--database-url), the rate limit off and a random admin token, and stops it at the end. With --url, give
ADMIN_TOKEN, DATABASE_URL (to count its connections) and --pid (the server process to watch).

--mix all (the default) sends, in every 20 requests: 6 /predict and 3 /detect with good photos, 4 bad
photos (not an image, a decompression bomb, a truncated JPEG, a photo without a face to /submissions),
4 submissions with a face (each with an Idempotency-Key) and 3 withdrawals of earlier ones (with their
deletion token, or the admin's). --mix predict sends only /predict with a 640x480 one-face JPEG.

Every --every requests it prints the server's resident memory (all its processes), its open file
descriptors, the database's client connections, the statuses of that window and its rate. At the end:
no status but the expected ones and 503 with Retry-After (no other 5xx, no error, no hang), file
descriptors and connections flat (within a few of their level after warm-up, the connections within
the pool), memory flat after warm-up (the last sample within --rss-slack MiB of the first after it),
and the rows stored equal to the 201s answered less the withdrawals. Exit status 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import itertools
import json
import os
import signal
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import psutil
from PIL import Image

from bench import common, load
from bench.machine import describe

FORM = {"first_name": "Eileen", "true_age": "42", "consent": "true"}
WARM_UP = 0.1  # the first tenth of the run (at least one report) is warm-up


# --- what is sent ----------------------------------------------------------------------------------------


@dataclass
class Request:
    kind: str
    method: str
    path: str
    expected: frozenset[int]
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def photo_640x480_jpeg() -> bytes:
    img = Image.open(load.FIXTURES / "astronaut.png").convert("RGB").crop((0, 0, 512, 384)).resize((640, 480))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def upload(kind: str, path: str, expected: set[int], data: bytes, name: str, ctype: str,
           fields: dict[str, str] | None = None, headers: dict[str, str] | None = None) -> Request:
    boundary = uuid.uuid4().hex
    parts = [load.part(k, v.encode()) for k, v in (fields or {}).items()] + [load.part("image", data, name, ctype)]
    return Request(kind, "POST", path, frozenset(expected), load.multipart(parts, boundary),
                   {"Content-Type": f"multipart/form-data; boundary={boundary}", **(headers or {})})


class Mix:
    """The next request to send, in a fixed rotation; withdrawals take the oldest submission not yet withdrawn."""

    ALL = ["predict", "detect", "submit", "not an image", "predict", "withdraw", "predict", "submit", "bomb",
           "detect", "predict", "withdraw", "submit", "truncated", "predict", "detect", "submit", "no face",
           "predict", "withdraw"]

    def __init__(self, mix: str, token: str) -> None:
        self.token = token
        self.rotation = itertools.cycle(["predict"] if mix == "predict" else self.ALL)
        self.jpeg = photo_640x480_jpeg()
        self.face_png = (load.FIXTURES / "astronaut.png").read_bytes()
        self.noface_png = (load.FIXTURES / "coffee.png").read_bytes()
        self.bomb = load.png_header_only(20000, 20000)
        self.truncated = self.jpeg[: len(self.jpeg) * 6 // 10]
        self.not_an_image = os.urandom(40_000)
        self.stored: deque[tuple[str, str]] = deque()  # (id, deletion token) of submissions not yet withdrawn
        self.withdrawn = 0

    def next(self) -> Request:
        kind = next(self.rotation)
        if kind == "withdraw" and self.stored:
            id_, token = self.stored.popleft()
            by_owner = self.withdrawn % 2 == 0
            self.withdrawn += 1
            auth = {"X-Deletion-Token": token} if by_owner else {"Authorization": f"Bearer {self.token}"}
            return Request("withdraw", "DELETE", f"/submissions/{id_}", frozenset({204}), headers=auth)
        if kind in ("submit", "withdraw"):
            return upload("submit", "/submissions", {201}, self.face_png, "me.png", "image/png", FORM,
                          {"Idempotency-Key": str(uuid.uuid4())})
        return {
            "predict": lambda: upload("predict", "/predict", {200}, self.jpeg, "face.jpg", "image/jpeg"),
            "detect": lambda: upload("detect", "/detect", {200}, self.face_png, "face.png", "image/png"),
            "not an image": lambda: upload("not an image", "/detect", {415}, self.not_an_image, "x.jpg", "image/jpeg"),
            "bomb": lambda: upload("bomb", "/predict", {413}, self.bomb, "b.png", "image/png"),
            "truncated": lambda: upload("truncated", "/predict", {422}, self.truncated, "t.jpg", "image/jpeg"),
            "no face": lambda: upload("no face", "/submissions", {422}, self.noface_png, "c.png", "image/png", FORM),
        }[kind]()

    def answered(self, request: Request, status: int, body: bytes) -> None:
        if request.kind == "submit" and status == 201:
            created = json.loads(body)
            self.stored.append((created["id"], created["deletion_token"]))


# --- the client: keep-alive HTTP/1.1 on asyncio streams ----------------------------------------------------


class Connection(common.Connection):
    async def send(self, request: Request) -> tuple[int, dict[str, str], bytes]:
        head = f"{request.method} {request.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in request.headers.items())
        return await self.exchange((head + f"Content-Length: {len(request.body)}\r\n\r\n").encode() + request.body)


# --- what is watched -------------------------------------------------------------------------------------


@dataclass
class Sample:
    requests: int
    seconds: float
    rss: int  # bytes, the server's processes together
    fds: int
    connections: int  # the database's client backends, this probe's excluded
    statuses: Counter  # of the window since the last sample


@dataclass
class Soak:
    samples: list[Sample] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    created: int = 0
    withdrawn: int = 0


def server_processes(pid: int) -> list[psutil.Process]:
    """The server and its worker processes (the embedded Postgres runs detached: not among them)."""
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def resident(processes: list[psutil.Process]) -> tuple[int, int]:
    rss = fds = 0
    for p in processes:
        with contextlib.suppress(psutil.Error):
            rss += p.memory_info().rss
            fds += p.num_fds()
    return rss, fds


async def database_connections(url: str | None) -> int:
    if not url:
        return -1
    import asyncpg

    dsn = url.replace("postgresql+asyncpg://", "postgresql://")
    connection = await asyncpg.connect(dsn, timeout=5)
    try:
        return await connection.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()")
    finally:
        await connection.close()


async def soak(url: str, token: str, pid: int | None, database_url: str | None, requests: int, concurrency: int,
               every: int, mix_name: str, request_timeout: float, progress: Callable[[Sample], None]) -> Soak:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    mix = Mix(mix_name, token)
    result = Soak()
    window: Counter = Counter()
    sent = 0
    started = time.perf_counter()
    processes = server_processes(pid) if pid else []

    async def sample(done: int) -> None:
        rss, fds = resident(processes)
        taken = Sample(done, time.perf_counter() - started, rss, fds, await database_connections(database_url),
                       Counter(window))
        window.clear()
        result.samples.append(taken)
        progress(taken)

    async def client() -> None:
        nonlocal sent
        connection = Connection(host, port)
        while sent < requests:
            sent += 1
            request = mix.next()
            try:
                async with asyncio.timeout(request_timeout):
                    status, headers, body = await connection.send(request)
            except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError, IndexError) as e:
                await connection.close()
                status, headers, body = type(e).__name__, {}, b""
            if status == 503 and not headers.get("retry-after"):
                result.problems.append(f"{request.kind}: 503 without Retry-After")
            elif status != 503 and status not in request.expected:
                result.problems.append(f"{request.kind} {request.method} {request.path}: {status}")
            if isinstance(status, int):
                mix.answered(request, status, body)
            window[status] += 1
            result.statuses[request.kind, status] += 1
            done = sum(result.statuses.values())
            if done % every == 0:
                await sample(done)
        await connection.close()

    await sample(0)
    await asyncio.gather(*(client() for _ in range(concurrency)))
    if sum(result.statuses.values()) % every:
        await sample(sum(result.statuses.values()))
    result.created = sum(n for (kind, status), n in result.statuses.items() if kind == "submit" and status == 201)
    result.withdrawn = sum(n for (kind, status), n in result.statuses.items() if kind == "withdraw" and status == 204)
    return result


def judge(result: Soak, *, rss_slack: int, pool: int, rows: int | None) -> list[str]:
    problems = list(dict.fromkeys(result.problems))  # each kind of problem once, in order
    samples = result.samples
    settled = samples[max(1, int(len(samples) * WARM_UP)):]  # after warm-up
    if len(settled) >= 2:
        first, last = settled[0], settled[-1]
        most = max(s.fds for s in settled)
        if most > first.fds + 8:
            problems.append(f"open file descriptors grow: {first.fds} after warm-up, {most} at most")
        if last.rss - first.rss > rss_slack:
            problems.append(f"memory grows after warm-up: {first.rss >> 20} -> {last.rss >> 20} MiB")
    connections = [s.connections for s in samples if s.connections >= 0]
    if connections and max(connections) > pool:
        problems.append(f"database connections beyond the pools: {max(connections)} > {pool}")
    if rows is not None and rows != result.created - result.withdrawn:
        problems.append(f"rows stored {rows} != 201s answered {result.created} - withdrawn {result.withdrawn}")
    return problems


def show(sample: Sample) -> None:
    window = ", ".join(f"{k}: {v}" for k, v in sorted(sample.statuses.items(), key=str)) or "-"
    print(f"{sample.requests:7d} {sample.seconds:8.1f} s  RSS {sample.rss / 2**20:7.1f} MiB  fds {sample.fds:4d}  "
          f"db connections {sample.connections:3d}  {window}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--mix", choices=["all", "predict"], default="all")
    parser.add_argument("--every", type=int, default=1000, help="requests between two reports")
    parser.add_argument("--rss-slack", type=float, default=32.0, help="MiB memory may grow after warm-up")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds one request may take")
    parser.add_argument("--workers", type=int, default=1, help="worker processes of the started server")
    parser.add_argument("--url", help="an already running server (default: start one); needs ADMIN_TOKEN")
    parser.add_argument("--pid", type=int, help="with --url: the server process to watch")
    parser.add_argument("--database-url", help="the server's database (default: the started server's embedded one)")
    args = parser.parse_args()
    # A hard bound on the whole run: 2 s a request at worst, plus start-up and shutdown.
    signal.alarm(int(args.requests * 2 + 300))

    print(describe())
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{args.requests} requests, mix {args.mix}, concurrency {args.concurrency}, report every {args.every}")
    print("   done  elapsed   server memory, descriptors and database connections, statuses of the window")
    pool = 10 * args.workers  # each worker's pool: 5 connections plus 5 overflow (api/storage/db.py)
    if args.url:
        token = os.environ.get("ADMIN_TOKEN", "")
        database_url = args.database_url or os.environ.get("DATABASE_URL")
        rows_before = load.count_rows(args.url, token)
        result = asyncio.run(soak(args.url, token, args.pid, database_url, args.requests, args.concurrency, args.every,
                                  args.mix, args.timeout, show))
        rows = load.count_rows(args.url, token) - rows_before
        problems = judge(result, rss_slack=int(args.rss_slack * 2**20), pool=pool, rows=rows)
    else:
        with Server(args.database_url, args.workers) as server:
            database_url = args.database_url or embedded_url(server.tmp / "pgdata")
            rows_before = load.count_rows(server.url, server.token)
            assert server.proc is not None
            result = asyncio.run(soak(server.url, server.token, server.proc.pid, database_url, args.requests,
                                      args.concurrency, args.every, args.mix, args.timeout, show))
            rows = load.count_rows(server.url, server.token) - rows_before
            problems = judge(result, rss_slack=int(args.rss_slack * 2**20), pool=pool, rows=rows)
    summarize(result, rows)
    common.verdict(problems, "ok: no 5xx but 503 with Retry-After, descriptors, connections and memory flat, "
                             "rows == 201s - withdrawals")


def summarize(result: Soak, rows: int | None) -> None:
    by_kind: dict[str, Counter] = {}
    for (kind, status), n in result.statuses.items():
        by_kind.setdefault(kind, Counter())[status] += n
    for kind, statuses in sorted(by_kind.items()):
        print(f"  {kind:14s} {dict(sorted(statuses.items(), key=str))}")
    samples = result.samples
    settled = samples[max(1, int(len(samples) * WARM_UP)):]
    if settled:
        rss = [s.rss / 2**20 for s in settled]
        print(f"  after warm-up ({settled[0].requests} requests): RSS {rss[0]:.1f} -> {rss[-1]:.1f} MiB "
              f"(min {min(rss):.1f}, max {max(rss):.1f}); fds {settled[0].fds} -> {settled[-1].fds}; "
              f"db connections {settled[0].connections} -> {settled[-1].connections}")
        seconds = samples[-1].seconds
        print(f"  {samples[-1].requests} requests in {seconds:.0f} s: {samples[-1].requests / seconds:.1f} requests/s")
    if rows is not None:
        print(f"  rows stored {rows}; 201s {result.created}, withdrawn {result.withdrawn}")


class Server(load.Server):
    """bench/load.py's server; with several workers, each with its share of the CPUs and one OpenMP thread."""

    def __init__(self, database_url: str | None, workers: int) -> None:
        threads = {"OMP_NUM_THREADS": "1", "WMA_CONCURRENCY_SLOTS": str(max(1, (os.cpu_count() or 1) // workers))}
        super().__init__(database_url, slots=None, workers=workers, extra_env=threads if workers > 1 else None)


def embedded_url(pgdata: Path) -> str:
    """The started server's embedded Postgres, on the socket in its pgdata (see api/storage/embedded.py)."""
    return f"postgresql://postgres@/postgres?host={pgdata.resolve()}"


if __name__ == "__main__":
    main()
