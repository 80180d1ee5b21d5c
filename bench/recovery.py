"""How long the served app takes to get its embedded Postgres back after a SIGKILL of the postmaster.

    .venv/bin/python -m bench.recovery [--kills 5] [--workers 1] [--uploads 4]

It migrates and serves the app itself (bench/soak.py's Server: embedded Postgres in a temporary
folder), keeps --uploads clients submitting photos (each retrying a 503 with the same Idempotency-Key),
then, --kills times, kills the postmaster with SIGKILL and polls /healthz every 50 ms on a new
connection until it answers 200. It prints each time from the kill to that 200, their median, and
what the uploads got; at the end the stored rows must be exactly the 201s answered (exit status 1
otherwise, or if a recovery took more than 10 s).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import time
import uuid
from collections import Counter

import httpx

from bench import load
from bench.common import verdict
from bench.machine import describe
from bench.soak import Server

LIMIT = 10.0  # seconds: the goal


async def healthy_again(url: str, killed: float) -> float:
    while True:
        try:
            async with httpx.AsyncClient(base_url=url, timeout=5) as client:
                if (await client.get("/healthz")).status_code == 200:
                    return time.monotonic() - killed
        except httpx.TransportError:
            pass
        if time.monotonic() - killed > 60:
            raise SystemExit("/healthz not 200 again within 60 s")
        await asyncio.sleep(0.05)


async def run(server: Server, kills: int, uploaders: int) -> tuple[list[float], Counter, set[str]]:
    photo = (load.FIXTURES / "astronaut.png").read_bytes()
    statuses: Counter = Counter()
    created: set[str] = set()
    stopping = asyncio.Event()

    async def upload() -> None:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            key = str(uuid.uuid4())
            while True:
                try:
                    response = await client.post("/submissions", data={"first_name": "Eileen", "true_age": "42",
                                                 "consent": "true"}, files={"image": ("me.png", photo, "image/png")},
                                                 headers={"Idempotency-Key": key})
                    statuses[response.status_code] += 1
                except httpx.TransportError as e:
                    statuses[type(e).__name__] += 1
                    await asyncio.sleep(0.2)
                    continue
                if response.status_code == 201:
                    created.add(response.json()["id"])
                    if stopping.is_set():
                        return
                    key = str(uuid.uuid4())
                else:  # 503: the same request again, with the same key
                    await asyncio.sleep(0.2)

    clients = [asyncio.create_task(upload()) for _ in range(uploaders)]
    times = []
    pgdata = server.tmp / "pgdata"
    for i in range(kills):
        await asyncio.sleep(3)  # let the clients store a few, and the watchdog settle
        pid = int((pgdata / "postmaster.pid").read_text().split()[0])
        killed = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        times.append(await healthy_again(server.url, killed))
        print(f"  kill {i + 1}: postmaster {pid} killed; /healthz 200 again after {times[-1]:.2f} s", flush=True)
    stopping.set()
    await asyncio.wait_for(asyncio.gather(*clients), 120)
    return times, statuses, created


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--uploads", type=int, default=4, help="clients submitting photos all along")
    args = parser.parse_args()
    signal.alarm(600)
    print(describe())
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{args.workers} worker(s), {args.uploads} clients submitting, {args.kills} kills")
    with Server(None, args.workers) as server:
        times, statuses, created = asyncio.run(run(server, args.kills, args.uploads))
        rows = load.count_rows(server.url, server.token)
    print(f"kill -> /healthz 200: median {statistics.median(times):.2f} s, max {max(times):.2f} s "
          f"({', '.join(f'{t:.2f}' for t in times)})")
    print(f"uploads: {dict(sorted(statuses.items(), key=str))}; rows stored {rows}, distinct 201s {len(created)}")
    problems = []
    if max(times) > LIMIT:
        problems.append(f"a recovery took {max(times):.2f} s > {LIMIT:.0f} s")
    if rows != len(created):
        problems.append(f"rows stored {rows} != 201s {len(created)}")
    if set(statuses) - {201, 503}:
        problems.append(f"answers other than 201 and 503: {dict(statuses)}")
    verdict(problems, "ok")


if __name__ == "__main__":
    main()
