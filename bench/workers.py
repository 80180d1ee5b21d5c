"""Memory per worker process, and /predict throughput, with 1 and with N uvicorn workers.

    .venv/bin/python -m bench.workers [--workers 1 2] [--requests 200] [--duration 8] [--concurrency 8]

For each worker count it serves the app as `python -m api serve --workers N` does (embedded Postgres
in a temporary folder, no migration needed for /predict), then reads each process's memory from
/proc (psutil): after start-up (model loaded), and again after about `--requests` warm-up /predict
calls and two `--duration`-second loads at `--concurrency` (640x480 one-face JPEG, the photo of
bench/http_latency.py): one over keep-alive connections, one with a new connection per request. Each worker's
CPU time during a load shows how the requests were shared out between the workers.

RSS counts every page a process maps, shared libraries included, so N workers' RSS added up
over-counts; PSS splits shared pages between the processes that share them, so it adds up to what
the machine really spends; USS is what one process alone holds (freed if it exits).

With N > 1 each worker gets WMA_CONCURRENCY_SLOTS = max(1, CPUs // N) and OMP_NUM_THREADS=1 unless
they are set, so that N workers do not run more age-network threads than there are cores (ml.serving.runtime).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import psutil

from bench.common import Connection, free_port, pct, server_env, start, stop, wait_healthy
from bench.http_latency import Run, load, multipart_request, photo_640x480_jpeg

MiB = 2**20


def workers_of(server: psutil.Process, n: int) -> list[psutil.Process]:
    """The processes that serve: the server itself with one worker, its spawned workers with several."""
    if n == 1:
        return [server]
    children = [c for c in server.children() if "spawn_main" in " ".join(c.cmdline())]
    return sorted(children, key=lambda c: c.pid)


def memory(processes: list[psutil.Process]) -> list[tuple[float, float, float]]:
    out = []
    for p in processes:
        info = p.memory_full_info()
        out.append((info.rss / MiB, info.pss / MiB, info.uss / MiB))
    return out


async def load_fresh_connections(host: str, port: int, raw: bytes, concurrency: int, duration: float) -> Run:
    """Like bench.http_latency.load, but every request on a connection of its own (as a proxy without keep-alive)."""
    run = Run()
    deadline = time.perf_counter() + duration

    async def worker() -> None:
        while time.perf_counter() < deadline:
            conn = Connection(host, port)
            t = time.perf_counter()
            try:
                status: int | str = await asyncio.wait_for(conn.request(raw), 30)
            except (OSError, asyncio.IncompleteReadError, TimeoutError) as e:
                status = type(e).__name__
            await conn.close()
            run.latencies.append(time.perf_counter() - t)
            run.statuses[status] += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    run.seconds = time.perf_counter() - t0
    return run


def cpu_seconds(processes: list[psutil.Process]) -> list[float]:
    return [sum(p.cpu_times()[:2]) for p in processes]


def show(label: str, rows: list[tuple[float, float, float]]) -> None:
    for i, (rss, pss, uss) in enumerate(rows):
        print(f"    {label:28s} worker {i}: RSS {rss:6.0f} MiB   PSS {pss:6.0f} MiB   USS {uss:6.0f} MiB")


def run(n: int, jpeg: bytes, requests: int, duration: float, concurrency: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="whatsmyage-workers-"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = server_env(tmp)
    if n > 1:
        env.setdefault("WMA_CONCURRENCY_SLOTS", str(max(1, (os.cpu_count() or 1) // n)))
        env.setdefault("OMP_NUM_THREADS", "1")
    log = open(tmp / "server.log", "wb")  # noqa: SIM115
    started = time.perf_counter()
    proc = start(env, port, log, workers=n, migrate=False)
    server = psutil.Process(proc.pid)
    try:
        wait_healthy(url, 180)
        deadline = time.monotonic() + 120
        while len(workers_of(server, n)) < n and time.monotonic() < deadline:
            time.sleep(0.2)
        processes = workers_of(server, n)
        while (tmp / "server.log").read_text().count("Application startup complete") < n:  # every model loaded
            if time.monotonic() > deadline:
                raise SystemExit("the workers did not all start")
            time.sleep(0.2)
        print(f"\n{n} worker(s): slots {env.get('WMA_CONCURRENCY_SLOTS', 'default')}, "
              f"OMP_NUM_THREADS {env.get('OMP_NUM_THREADS', 'unset')}; healthy after "
              f"{time.perf_counter() - started:.1f} s")
        if n > 1:
            parent = server.memory_full_info()
            print(f"    supervisor (loads no model): RSS {parent.rss / MiB:.0f} MiB, PSS {parent.pss / MiB:.0f} MiB")
        show("after start-up", memory(processes))
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        raw = multipart_request(host, "/predict", "face.jpg", jpeg, "image/jpeg")
        health = f"GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
        asyncio.run(load_fresh_connections(host, port, raw, 4, max(1.0, requests / 40)))  # warm-up, every worker
        for mode in ("keep-alive", "new connection per request"):
            cpu0 = cpu_seconds(processes)
            if mode == "keep-alive":
                result = asyncio.run(load(host, port, raw, health, concurrency, duration, None))
            else:
                result = asyncio.run(load_fresh_connections(host, port, raw, concurrency, duration))
            used = [after - before for before, after in zip(cpu0, cpu_seconds(processes), strict=True)]
            ok = result.statuses.get(200, 0)
            errors = {k: v for k, v in result.statuses.items() if k != 200}
            share = " / ".join(f"{u / max(sum(used), 1e-9):.0%}" for u in used)
            print(f"    /predict, c={concurrency}, {mode}, {duration:.0f} s: {ok / result.seconds:5.1f} req/s, "
                  f"p50 {pct(result.latencies, 50) * 1000:.0f} ms, p99 {pct(result.latencies, 99) * 1000:.0f} ms, "
                  f"errors {errors or 'none'}; CPU by worker {share}")
        rows = memory(processes)
        show("after the load", rows)
        total_pss = sum(pss for _, pss, _ in rows) + (server.memory_full_info().pss / MiB if n > 1 else 0)
        print(f"    all processes together: PSS {total_pss:.0f} MiB")
    finally:
        stop(proc, 60)
        stopped = not (tmp / "pgdata" / "postmaster.pid").exists()
        print(f"    stopped (exit {proc.returncode}); embedded Postgres stopped: {stopped}")
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--requests", type=int, default=200, help="about how many warm-up requests")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds of load per worker count")
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    signal.alarm(int(len(args.workers) * (2 * args.duration + args.requests / 40 + 300)))
    print(f"{os.cpu_count()} CPUs; load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    jpeg = photo_640x480_jpeg()
    for n in args.workers:
        run(n, jpeg, args.requests, args.duration, args.concurrency)
    print(f"\nload average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
