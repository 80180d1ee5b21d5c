"""What one photo costs over HTTP, as a ratio to decoding a 640x480 JPEG with Pillow in this process:
issue 22's cost goals, this checkout and a baseline side by side.

    .venv/bin/python -m bench.photo_cost [--baseline ../main] [--repeat 60] [--blocks 6] [--faces DIR]

It serves this checkout (and with `--baseline CHECKOUT` that one too, with this interpreter; nothing is
written into it) as bench.http_latency does, then sends POST /predict one request at a time for each
photo: the 640x480 one-face JPEG of bench.http_latency, the 6-face 1280x886 group photo and the
4352x2903 one-face photo (a progressive JPEG) of ../shared/data/faces. Before each request this process
decodes the 640x480 JPEG with Pillow once, so that the unit of the ratio is measured in the same
stretch of time as the requests it divides: CPU speed differs between machines, and on a shared one
from minute to minute. The servers take turns in `--blocks` blocks. Per server and photo: the median
request, its ratio to the median decode beside it, the server's CPU per request and its own stage
times (means, from /metrics), against the 2026-12-06 figures (main, quiet machine) and the goals.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import io
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from PIL import Image

from bench.common import ROOT, Connection, Served, free_port, server_env, start, stop, wait_healthy
from bench.http_latency import STAGES, multipart_request, photo_640x480_jpeg, stage_sums
from bench.machine import describe
from ml import Predictor
from ml.paths import WEIGHTS_DIR
from ml.serving import runtime

FACES = ROOT.parent / "shared" / "data" / "faces"
PHOTOS = {  # name: (file in --faces, or None for the 640x480 JPEG made here), 2026-12-06's ratio (main), the goal
    "640x480 JPEG, 1 face": (None, 16.6, 8.0),
    "1280x886 JPEG, 6 faces": ("multi_insightface_t1.jpg", 45.0, 25.0),
    "4352x2903 JPEG, 1 face": ("large_single_4352x2903.jpg", 74.0, 30.0),
}


@dataclass
class Server(Served):
    name: str
    url: str
    proc: object = None
    tmp: Path | None = None
    process: psutil.Process | None = None
    requests: dict[str, list[float]] = field(default_factory=dict)
    decodes: dict[str, list[float]] = field(default_factory=dict)  # the unit, measured beside each request
    decode_cpu: dict[str, list[float]] = field(default_factory=dict)  # ... and its CPU time
    cpu: dict[str, float] = field(default_factory=dict)  # server CPU seconds, summed
    stages: dict[str, dict[str, float]] = field(default_factory=dict)  # summed seconds per stage


def serve(name: str, root: Path) -> Server:
    tmp = Path(tempfile.mkdtemp(prefix="whatsmyage-cost-"))
    port = free_port()
    log = open(tmp / "server.log", "wb")  # noqa: SIM115
    proc = start(server_env(tmp, PYTHONDONTWRITEBYTECODE="1"), port, log, root=root)
    return Server(name, f"http://127.0.0.1:{port}", proc, tmp, psutil.Process(proc.pid))


def decode_640(jpeg: bytes) -> tuple[float, float]:
    """Seconds and CPU seconds of one decode."""
    t, c = time.perf_counter(), time.thread_time()
    Image.open(io.BytesIO(jpeg)).load()
    return time.perf_counter() - t, time.thread_time() - c


async def stretch(server: Server, name: str, raw: bytes, unit: bytes, n: int) -> None:
    """`n` requests one at a time, each after one decode of the unit JPEG here."""
    conn = Connection(server.host, server.port)
    before = stage_sums(server.url)
    cpu0 = sum(server.process.cpu_times()[:2]) if server.process else 0.0
    for _ in range(n):
        seconds, cpu = decode_640(unit)
        server.decodes.setdefault(name, []).append(seconds)
        server.decode_cpu.setdefault(name, []).append(cpu)
        t = time.perf_counter()
        status = await conn.request(raw)
        server.requests.setdefault(name, []).append(time.perf_counter() - t)
        assert status == 200, status
    await conn.close()
    if server.process:
        server.cpu[name] = server.cpu.get(name, 0.0) + sum(server.process.cpu_times()[:2]) - cpu0
    after = stage_sums(server.url)
    sums = server.stages.setdefault(name, {})
    for s in STAGES:
        if s in after:
            sums[s] = sums.get(s, 0.0) + after[s][0] - before.get(s, (0.0, 0.0))[0]


def in_process(photos: dict[str, bytes], unit: bytes, repeat: int) -> None:
    """CPU time of each stage of the served predictor (one thread), as a ratio to the unit decode's."""
    clock = time.process_time
    predictor = Predictor.load(threads=1)
    single = runtime.load_age_model(WEIGHTS_DIR / "resnet10-utkface-v2.onnx", predictor.cpus)
    models = {"age step": predictor.age_model, "v2": single, "v2 no mirror": dataclasses.replace(single, mirror=False)}
    print(f"\nin this process, one thread: CPU time per stage over the unit decode's, median of {repeat}; the age "
          "step of the served model, and of one network (v2) with and without its mirrored chip instead")
    print(f"  {'photo':24} {'unit ms':>7} {'decode':>7} {'detect':>7} {'align':>7} "
          + " ".join(f"{m:>12}" for m in models) + f" {'total':>7}")
    for name, data in photos.items():
        cpu: dict[str, list[float]] = {}

        def timed(cpu: dict[str, list[float]], key: str, fn, *args):  # noqa: ANN001, ANN202
            c = clock()
            out = fn(*args)
            cpu.setdefault(key, []).append(clock() - c)
            return out

        for i in range(repeat + 2):  # the first two warm up
            if i == 2:
                cpu.clear()
            timed(cpu, "unit", decode_640, unit)
            img = timed(cpu, "decode", predictor.decode, data)
            faces = timed(cpu, "detect", predictor.detector.detect, img.rgb)
            chips = timed(cpu, "align", predictor.chips, img, faces)
            for key, model in models.items():
                timed(cpu, key, model.estimate, chips)
        med = {k: statistics.median(v) for k, v in cpu.items()}
        u = med["unit"]
        total = sum(med[k] for k in ("decode", "detect", "align", "age step"))
        print(f"  {name:24} {u * 1000:7.2f} " + " ".join(f"{med[k] / u:6.1f}x" for k in ("decode", "detect", "align"))
              + " " + " ".join(f"{med[m] / u:11.1f}x" for m in models) + f" {total / u:6.1f}x")
    predictor.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=60, help="requests per photo and server")
    parser.add_argument("--blocks", type=int, default=6, help="turns the servers take")
    parser.add_argument("--baseline", type=Path, metavar="CHECKOUT", help="also serve this checkout")
    parser.add_argument("--faces", type=Path, default=FACES, help="the shared photos")
    parser.add_argument("--in-process-only", action="store_true", help="only the stages, in this process")
    args = parser.parse_args()
    for sig in (signal.SIGALRM, signal.SIGTERM):  # stop the servers on the way out
        signal.signal(sig, lambda *_: sys.exit("stopped"))
    signal.alarm(int(600 + 2 * args.repeat * 3 * 2))  # a hard bound, whatever happens

    unit = photo_640x480_jpeg()
    photos = {name: (args.faces / file).read_bytes() if file else unit for name, (file, _, _) in PHOTOS.items()
              if file is None or (args.faces / file).exists()}
    print(describe())
    if args.in_process_only:
        in_process(photos, unit, args.repeat)
        return
    servers = [serve("this checkout", ROOT)]
    if args.baseline:
        servers.append(serve(f"baseline {args.baseline}", args.baseline.resolve()))
    try:
        for s in servers:
            wait_healthy(s.url, 180, s.proc)  # type: ignore[arg-type]
        per_block = max(1, args.repeat // args.blocks)
        for s in servers:  # warm-up: first runs allocate the detectors' working memory
            raws = {n: multipart_request(s.host, "/predict", "photo.jpg", d, "image/jpeg") for n, d in photos.items()}
            for name, raw in raws.items():
                asyncio.run(stretch(Server(s.name, s.url), name, raw, unit, 5))
        for _ in range(args.blocks):
            for s in servers:
                for name, data in photos.items():
                    raw = multipart_request(s.host, "/predict", "photo.jpg", data, "image/jpeg")
                    asyncio.run(stretch(s, name, raw, unit, per_block))

        n = per_block * args.blocks
        print(f"\nPOST /predict one request at a time, {n} per photo and server in {args.blocks} turns. unit: the "
              "median Pillow decode of the 640x480 JPEG in this process, beside the requests; ratio: the median "
              "request over it; CPU ratio: the server's CPU per request over the decode's CPU time (steadier on a "
              "busy machine, where a request waits for a CPU at every hand-over between threads). Stage times: the "
              "server's own means from /metrics. ms")
        print(f"  {'photo':24} {'server':24} {'median':>7} {'unit':>5} {'ratio':>6} {'CPU':>6} {'CPU ratio':>9}  "
              + " ".join(f"{s:>6}" for s in STAGES) + f"  {'12-06':>6} {'goal':>6}")
        for name in photos:
            for s in servers:
                med, u = statistics.median(s.requests[name]), statistics.median(s.decodes[name])
                cpu, u_cpu = s.cpu.get(name, float("nan")) / n, statistics.median(s.decode_cpu[name])
                stages = " ".join(f"{s.stages[name].get(st, 0.0) / n * 1000:6.2f}" for st in STAGES)
                _, then, goal = PHOTOS[name]
                print(f"  {name:24} {s.name[:24]:24} {med * 1000:7.1f} {u * 1000:5.2f} {med / u:5.1f}x "
                      f"{cpu * 1000:6.1f} {cpu / u_cpu:8.1f}x  {stages}  {then:5.1f}x {goal:5.1f}x")
    finally:
        for s in servers:
            code = stop(s.proc)  # type: ignore[arg-type]
            print(f"{s.name}: server stopped (exit {code})")
            shutil.rmtree(s.tmp or "", ignore_errors=True)
    in_process(photos, unit, args.repeat)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
