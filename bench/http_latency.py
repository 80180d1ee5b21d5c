"""HTTP load on loopback against the served app: the issue-11 figures, against main's and the goals.

    .venv/bin/python -m bench.http_latency [--duration 10] [--baseline ../main] [--env NAME=VALUE ...]
    .venv/bin/python -m bench.http_latency --memory 20000 [--every 1000]   # resident memory under mixed load

It migrates and serves the app itself (`python -m api migrate`, `python -m api serve`) on a free port
with an embedded Postgres in a temporary folder, and stops it at the end (`--url` measures a server
already running instead; `--env` adds settings to the server's environment, e.g.
`--env MALLOC_ARENA_MAX=2`). With `--baseline CHECKOUT` (e.g. `../main`, served by this interpreter,
which needs that checkout's dependencies; nothing is written into it) both servers run and are
measured alternately, so that the old path and the new see the same machine. Then:
- one request at a time: /healthz, /predict of a 64x64 PNG without a face (the fixed cost of an
  upload), of the 512x512 one-face PNG and of the 640x480 one-face JPEG; with the server's CPU per
  request (its event-loop thread apart) and its own stage times (decode, detect, align, age, from
  /metrics), so that what is detection shows;
- /predict with the 640x480 JPEG at concurrency 1, 8 and 32 (requests/s, p50/p95/p99, errors by
  status, server CPU per request), /healthz latency measured all the while (one request every 20 ms
  on its own connection: a blocked event loop shows up there);
- the server's resident memory after start-up and after the load; last, a table of each figure
  against main's (issue 11, measured 2026-12-01 on a quiet machine) and the goal.
With --memory N it sends N uploads instead, a mix of photos (with and without faces, small and 12
megapixels, the 6-face group photo when present) at concurrency 8, and prints the server's resident
memory every --every uploads. Everything is bounded in time.

The client is a minimal HTTP/1.1 keep-alive client on asyncio streams, so that the load generator
costs little CPU next to the server on a small machine.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from PIL import Image

from bench.common import ROOT, Connection, Served, free_port, pct, server_env, start, stop, wait_healthy
from bench.machine import cpu_model

ASTRONAUT = ROOT / "tests" / "fixtures" / "astronaut.png"
GROUP_PHOTO = ROOT.parent / "shared" / "data" / "faces" / "multi_insightface_t1.jpg"
STAGES = ("decode", "detect", "align", "age")
MiB = 2**20


def photo_640x480_jpeg() -> bytes:
    img = Image.open(ASTRONAUT).convert("RGB").crop((0, 0, 512, 384)).resize((640, 480), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def faceless_png() -> bytes:
    """The fixed cost of an upload: a 64x64 grey PNG, decoded and searched, no face found."""
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (128, 128, 128)).save(buf, "PNG")
    return buf.getvalue()


def photo_12mp_jpeg() -> bytes:
    """A phone-sized upload: 4000x3000, with a little sensor-like noise so that it weighs what a
    phone's JPEG does (about 3 MB: over Starlette's 1 MiB in-memory spool)."""
    import numpy as np

    img = Image.open(ASTRONAUT).convert("RGB").resize((4000, 3000), Image.Resampling.BILINEAR)
    noise = np.random.default_rng(0).integers(-6, 7, (3000, 4000, 3), dtype=np.int16)
    img = Image.fromarray(np.clip(np.asarray(img, dtype=np.int16) + noise, 0, 255).astype(np.uint8))
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


@dataclass
class Run:
    latencies: list[float] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    health: list[float] = field(default_factory=list)
    health_statuses: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    server_cpu: float = 0.0


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


def thread_cpu(server: psutil.Process, tid: int) -> float:
    """CPU seconds of one thread of the server (the event loop runs on its main thread: tid == pid)."""
    fields = Path(f"/proc/{server.pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stage_sums(url: str) -> dict[str, tuple[float, float]]:
    """(sum of seconds, count) per stage from the server's /metrics."""
    with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    out: dict[str, list[float]] = {}
    for kind, stage, value in re.findall(r'whatsmyage_stage_seconds_(sum|count)\{stage="(\w+)"\} (\S+)', text):
        out.setdefault(stage, [0.0, 0.0])[0 if kind == "sum" else 1] = float(value)
    return {k: (v[0], v[1]) for k, v in out.items()}


@dataclass
class OneAtATime:
    median: float
    times: list[float]
    loop_cpu: float  # event-loop thread, seconds per request
    cpu: float  # whole server process, seconds per request
    stages: dict[str, float]  # the server's own stage times, seconds per request


def one_at_a_time(host: str, port: int, url: str, raw: bytes, n: int, server: psutil.Process | None) -> OneAtATime:
    asyncio.run(sequential(host, port, raw, 10))  # warm-up
    before = stage_sums(url)
    c0 = sum(server.cpu_times()[:2]) if server else 0.0
    l0 = thread_cpu(server, server.pid) if server else 0.0
    times, statuses = asyncio.run(sequential(host, port, raw, n))
    c1 = sum(server.cpu_times()[:2]) if server else float("nan")
    l1 = thread_cpu(server, server.pid) if server else float("nan")
    after = stage_sums(url)
    assert set(statuses) == {200}, statuses
    stages = {s: (after[s][0] - before.get(s, (0, 0))[0]) / n for s in STAGES if s in after}
    return OneAtATime(statistics.median(times), times, (l1 - l0) / n, (c1 - c0) / n, stages)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:7.1f}"


def rss_mb(server: psutil.Process | None) -> float:
    return server.memory_info().rss / MiB if server else float("nan")


async def memory_run(host: str, port: int, photos: list[bytes], total: int, every: int, concurrency: int,
                     server: psutil.Process) -> None:
    """`total` uploads of `photos` in turn at `concurrency`, the server's RSS every `every`."""
    sent = 0
    statuses: Counter = Counter()
    next_report = every
    t0 = time.perf_counter()

    async def client() -> None:
        nonlocal sent, next_report
        conn = Connection(host, port)
        while sent < total:
            raw = photos[sent % len(photos)]
            sent += 1
            try:
                statuses[await asyncio.wait_for(conn.request(raw), 30)] += 1
            except (OSError, asyncio.IncompleteReadError, TimeoutError) as e:
                statuses[type(e).__name__] += 1
                await conn.close()
            done = sum(statuses.values())
            if done >= next_report:
                next_report += every
                print(f"  {done:6d} uploads  {time.perf_counter() - t0:6.0f} s  RSS {rss_mb(server):5.0f} MiB  "
                      f"statuses {dict(statuses)}", flush=True)
        await conn.close()

    await asyncio.gather(*(client() for _ in range(concurrency)))


def serve(root: Path, env_extra: dict[str, str]) -> tuple[subprocess.Popen, Path, str]:
    """Migrate and serve the checkout at `root` on a free port, with an embedded Postgres in a temporary
    folder; nothing is written into `root` (no bytecode)."""
    tmp = Path(tempfile.mkdtemp(prefix="whatsmyage-bench-"))
    port = free_port()
    env = server_env(tmp, PYTHONDONTWRITEBYTECODE="1") | env_extra
    log = open(tmp / "server.log", "wb")  # noqa: SIM115
    return start(env, port, log, root=root), tmp, f"http://127.0.0.1:{port}"


@dataclass
class Target(Served):
    """One server under test: this checkout's, or a baseline checkout's (`--baseline`)."""

    name: str
    url: str
    proc: subprocess.Popen | None = None
    tmp: Path | None = None
    server: psutil.Process | None = None
    rss_start: float = float("nan")
    fixed: dict[str, OneAtATime] = field(default_factory=dict)
    levels: dict[int, Run] = field(default_factory=dict)
    rss_load: float = float("nan")

    def stop(self) -> None:
        if self.proc is None:
            return
        stop(self.proc)
        assert self.tmp is not None
        stopped = not (self.tmp / "pgdata" / "postmaster.pid").exists()
        print(f"{self.name}: server stopped (exit {self.proc.returncode}); embedded Postgres stopped: {stopped}")
        shutil.rmtree(self.tmp, ignore_errors=True)


def merged(parts: list[OneAtATime], times: list[float]) -> OneAtATime:
    n = len(parts)
    stages = {s: sum(p.stages.get(s, 0.0) for p in parts) / n for s in STAGES if s in parts[0].stages}
    return OneAtATime(statistics.median(times), times, sum(p.loop_cpu for p in parts) / n,
                      sum(p.cpu for p in parts) / n, stages)


# Issue 11's figures for main (2026-12-01, same machine, quiet), and its goals.
MAIN = {"predict_png": "31.4 ms", "faceless": "7.2 ms", "healthz": "1.6 ms", "c8": "45-60 req/s, p99 180-370",
        "rss_start": "463 MB", "rss_load": "605-709 MB"}
GOALS = {"predict_png": "<= 10 ms", "faceless": "<= 3 ms", "healthz": "", "c8": ">= 150 req/s, p99 <= 150",
         "rss_start": "<= 250 MB", "rss_load": "<= 300 MB after 20,000"}
KINDS = (("healthz", "GET /healthz"), ("faceless", "POST /predict 64x64 PNG, no face"),
         ("predict_png", "POST /predict 512x512 PNG, 1 face"), ("predict_jpeg", "POST /predict 640x480 JPEG, 1 face"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per concurrency level")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--repeat", type=int, default=200, help="requests per one-at-a-time figure")
    parser.add_argument("--url", help="an already running server (default: start one)")
    parser.add_argument("--baseline", type=Path, metavar="CHECKOUT",
                        help="also serve this checkout (e.g. ../main) and measure both, alternating")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="server environment")
    parser.add_argument("--memory", type=int, metavar="N", help="only send N mixed uploads, printing RSS")
    parser.add_argument("--every", type=int, default=1000, help="uploads between RSS lines (--memory)")
    args = parser.parse_args()
    # A hard bound, whatever happens: every phase plus start-up and shutdown.
    servers = 2 if args.baseline else 1
    budget = args.memory * 0.3 if args.memory else servers * (args.duration * len(args.concurrency) + args.repeat * 0.5)
    signal.alarm(int(budget + 300 * servers))

    print(f"CPU: {cpu_model()}, {os.cpu_count()} logical CPUs; Python {platform.python_version()}")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    jpeg, png, tiny = photo_640x480_jpeg(), ASTRONAUT.read_bytes(), faceless_png()
    env = dict(e.split("=", 1) for e in args.env)

    targets: list[Target] = []
    try:
        if args.url:
            targets.append(Target("server", args.url))
        else:
            proc, tmp, url = serve(ROOT, env)
            targets.append(Target("this checkout", url, proc, tmp, psutil.Process(proc.pid)))
        if args.baseline:
            proc, tmp, url = serve(args.baseline.resolve(), env)
            targets.append(Target(f"baseline {args.baseline}", url, proc, tmp, psutil.Process(proc.pid)))
        for t in targets:
            wait_healthy(t.url, 180)
            t.rss_start = rss_mb(t.server)
            if t.server is not None:
                print(f"{t.name}: pid {t.server.pid}, RSS {t.rss_start:.0f} MiB after start-up"
                      + (f" (environment: {' '.join(args.env)})" if args.env else ""))

        def uploads(t: Target) -> dict[str, bytes]:
            return {"faceless": multipart_request(t.host, "/predict", "none.png", tiny, "image/png"),
                    "predict_png": multipart_request(t.host, "/predict", "face.png", png, "image/png"),
                    "predict_jpeg": multipart_request(t.host, "/predict", "face.jpg", jpeg, "image/jpeg"),
                    "healthz": f"GET /healthz HTTP/1.1\r\nHost: {t.host}\r\n\r\n".encode()}

        if args.memory:
            t = targets[0]
            assert t.server is not None, "--memory needs the server this script starts"
            mix = [uploads(t)["predict_jpeg"], uploads(t)["faceless"], uploads(t)["predict_png"],
                   multipart_request(t.host, "/predict", "big.jpg", photo_12mp_jpeg(), "image/jpeg"),
                   multipart_request(t.host, "/detect", "face.jpg", jpeg, "image/jpeg")]
            if GROUP_PHOTO.exists():
                mix.append(multipart_request(t.host, "/predict", "group.jpg", GROUP_PHOTO.read_bytes(), "image/jpeg"))
            print(f"\n{args.memory} uploads of {len(mix)} kinds in turn, concurrency 8")
            asyncio.run(memory_run(t.host, t.port, mix, args.memory, args.every, 8, t.server))
            time.sleep(5)
            print(f"  idle 5 s after the last upload: RSS {rss_mb(t.server):.0f} MiB")
            return

        blocks = 4 if len(targets) > 1 else 1  # servers alternate in blocks, so that both see the same load
        print(f"\none request at a time, {args.repeat} each (median; servers alternating in {blocks} blocks); "
              "server CPU per request: all threads, and its event-loop thread; the server's own stage times "
              "(mean, from /metrics), ms per request")
        print(f"  {'request':34} {'server':22} {'median':>7} {'CPU':>6} {'loop':>6}  "
              + " ".join(f"{s:>6}" for s in STAGES))
        for key, label in KINDS:
            parts: dict[str, list[OneAtATime]] = {t.name: [] for t in targets}
            times: dict[str, list[float]] = {t.name: [] for t in targets}
            for _ in range(blocks):
                for t in targets:
                    r = one_at_a_time(t.host, t.port, t.url, uploads(t)[key], args.repeat // blocks, t.server)
                    parts[t.name].append(r)
                    times[t.name] += r.times
            for t in targets:
                r = t.fixed[key] = merged(parts[t.name], times[t.name])
                print(f"  {label:34} {t.name[:22]:22} {ms(r.median)} {r.cpu * 1000:6.2f} {r.loop_cpu * 1000:6.2f}  "
                      + " ".join(f"{r.stages[s] * 1000:6.2f}" if s in r.stages else f"{'':6}" for s in STAGES))

        print(f"\n/predict, 640x480 JPEG ({len(jpeg) // 1024} KiB), {args.duration:.0f} s per level and server")
        print(f"  {'server':22} conc   req/s   p50 ms   p95 ms   p99 ms   server CPU ms/req   errors        "
              "/healthz p99 ms (n)")
        for c in args.concurrency:
            for t in targets:
                u = uploads(t)
                run = t.levels[c] = asyncio.run(load(t.host, t.port, u["predict_jpeg"], u["healthz"], c, args.duration,
                                                     t.server))
                ok = run.statuses.get(200, 0)
                errors = {k: v for k, v in run.statuses.items() if k != 200}
                hbad = {k: v for k, v in run.health_statuses.items() if k != 200}
                cpu = run.server_cpu / max(1, sum(run.statuses.values())) * 1000
                print(f"  {t.name[:22]:22} {c:4d} {ok / run.seconds:7.1f}  {ms(pct(run.latencies, 50))}  "
                      f"{ms(pct(run.latencies, 95))}  {ms(pct(run.latencies, 99))}   {cpu:12.1f}        "
                      f"{str(errors or 'none'):12s}  {ms(pct(run.health, 99))} ({len(run.health)}"
                      f"{', ' + str(hbad) if hbad else ''})")
        for t in targets:
            t.rss_load = rss_mb(t.server)
            if t.server is not None:
                print(f"{t.name}: RSS after the load {t.rss_load:.0f} MiB")

        def figures(t: Target) -> dict[str, str]:
            out = {"predict_png": f"{t.fixed['predict_png'].median * 1000:.1f} ms",
                   "faceless": f"{t.fixed['faceless'].median * 1000:.1f} ms (detect "
                               f"{t.fixed['faceless'].stages.get('detect', 0) * 1000:.1f})",
                   "healthz": f"{t.fixed['healthz'].median * 1000:.1f} ms",
                   "rss_start": f"{t.rss_start:.0f} MiB", "rss_load": f"{t.rss_load:.0f} MiB"}
            if 8 in t.levels:
                r8 = t.levels[8]
                out["c8"] = f"{r8.statuses.get(200, 0) / r8.seconds:.1f} req/s, p99 {pct(r8.latencies, 99) * 1000:.0f}"
            return out

        columns = [(t.name[:26], figures(t)) for t in targets] + [("main, issue 11", MAIN), ("goal", GOALS)]
        print(f"\n  {'figure (median; p99 in ms)':34} " + " ".join(f"{name:28}" for name, _ in columns))
        for key, label in (("predict_png", "POST /predict 512x512 PNG"),
                           ("faceless", "POST /predict 64x64 PNG, no face"), ("healthz", "GET /healthz"),
                           ("c8", "640x480 JPEG, concurrency 8"), ("rss_start", "RSS after start-up"),
                           ("rss_load", "RSS after this load")):
            print(f"  {label:34} " + " ".join(f"{col.get(key, ''):28}" for _, col in columns))
    finally:
        for t in targets:
            t.stop()
        print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
