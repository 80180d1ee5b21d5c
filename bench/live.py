"""Live mode: answers a second and frame delay for 1, 2 and 4 live clients, and server CPU per frame.

    .venv/bin/python -m bench.live [--seconds 10] [--clients 1,2,4] [--age-weights ml/weights/X.onnx]

The app is served for real (`python -m api serve`, embedded Postgres in a scratch folder) with the
live frame-rate limit raised out of the way (`WMA_LIVE_FRAMES_PER_SECOND=1000`), so that what is
measured is what the machine gives. Each client is a WebSocket on `/live` that sends a 480x360 JPEG
of the astronaut fixture (camera-like: a little noise, a few variants), waits for the answer and
sends the next at once, as the Live view does; the delay of a frame is from its send to its answer.
The clients run in this process (asyncio), on the same machine as the server: they take CPU too.

Server CPU per frame, two ways: the engine's (`Predictor.predict` in this process, before the server
starts: the CPU time of each call, median; a frame as the live stream runs it, `video=True`, beside the
same frame as a photo), and the served process's (its CPU time over a run,
divided by the frames answered: the WebSocket, JSON and tracking included). `--age-weights` serves
another age model (the server's registry starts empty, so it is the one made active), e.g. the one
network `resnet10-utkface-v3.onnx` instead of the default three.

Goals (issue 26): 1 client >= 15 answers a second with p95 delay <= 80 ms; 2 clients >= 10 each;
CPU per 480x360 frame <= 10 ms (median, on a quiet machine: the load average is printed).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import psutil
from PIL import Image
from websockets.asyncio.client import connect

from bench.common import ROOT, free_port, pct, server_env, start, stop, wait_healthy
from bench.machine import describe

ASTRONAUT = ROOT / "tests" / "fixtures" / "astronaut.png"
WIDTH, HEIGHT = 480, 360


def frames(n: int = 8) -> list[bytes]:
    """480x360 JPEGs of the astronaut (cut to 4:3), each with its own sensor-like noise."""
    base = np.asarray(Image.open(ASTRONAUT).convert("RGB").crop((0, 0, 512, 384)).resize((WIDTH, HEIGHT)),
                      dtype=np.float32)
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        noisy = np.clip(base + rng.normal(0, 4, base.shape), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(noisy).save(buf, "JPEG", quality=80)
        out.append(buf.getvalue())
    return out


def engine_cpu_ms(data: list[bytes], n: int, weights: Path | None) -> tuple[str, dict[str, tuple[float, float]]]:
    """The model's version and, for a photo and for a video frame (`Predictor.predict(video=True)`, as
    the live stream calls it), the median CPU ms (all threads of this process) and wall ms per frame;
    the two alternate, so that both see the same machine."""
    from ml.serving.predictor import Predictor

    cpu: dict[str, list[float]] = {"photo": [], "video": []}
    wall: dict[str, list[float]] = {"photo": [], "video": []}
    with Predictor.load(weights) as predictor:
        for i in range(5):
            predictor.predict(data[i % len(data)])
        for i in range(n):
            for mode in ("photo", "video"):
                c, w = time.process_time(), time.perf_counter()
                predictor.predict(data[i % len(data)], video=mode == "video")
                cpu[mode].append(time.process_time() - c)
                wall[mode].append(time.perf_counter() - w)
        version = predictor.version
    return version, {m: (statistics.median(cpu[m]) * 1000, statistics.median(wall[m]) * 1000) for m in cpu}


@dataclass
class Client:
    answers: int = 0
    faces_seen: int = 0
    errors: int = 0
    delays: list[float] = field(default_factory=list)  # seconds
    server_ms: list[float] = field(default_factory=list)


async def run_client(url: str, data: list[bytes], client: Client, measuring: asyncio.Event,
                     done: asyncio.Event) -> None:
    async with connect(url, max_size=2**20) as ws:
        hello = json.loads(await ws.recv())
        assert hello["type"] == "hello", hello
        i = 0
        while not done.is_set():
            sent = time.perf_counter()
            await ws.send(data[i % len(data)])
            answer = json.loads(await ws.recv())
            i += 1
            if not measuring.is_set():
                continue
            client.delays.append(time.perf_counter() - sent)
            if answer["type"] == "faces":
                client.answers += 1
                client.faces_seen += len(answer["faces"])
                client.server_ms.append(answer["server_ms"])
            else:
                client.errors += 1


async def measure(url: str, data: list[bytes], n: int, seconds: float, server: psutil.Process,
                  warmup: float = 2.0) -> tuple[list[Client], float]:
    """`n` clients for `warmup` + `seconds`; each client's figures and the server's CPU seconds over the window."""
    clients = [Client() for _ in range(n)]
    measuring, done = asyncio.Event(), asyncio.Event()
    tasks = [asyncio.create_task(run_client(url, data, c, measuring, done)) for c in clients]
    await asyncio.sleep(warmup)
    cpu = server.cpu_times()
    measuring.set()
    await asyncio.sleep(seconds)
    done.set()
    after = server.cpu_times()
    await asyncio.gather(*tasks)
    return clients, (after.user + after.system) - (cpu.user + cpu.system)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per client count")
    parser.add_argument("--clients", default="1,2,4", help="client counts, comma-separated")
    parser.add_argument("--engine-frames", type=int, default=60, help="frames for the engine's CPU figure")
    parser.add_argument("--age-weights", type=Path, help="an exported .onnx age model (default: the shipped one)")
    args = parser.parse_args()
    counts = [int(c) for c in args.clients.split(",")]
    data = frames()

    print(f"machine: {describe()}")
    print(f"frames: {WIDTH}x{HEIGHT} JPEG, {statistics.median(len(d) for d in data) / 1024:.0f} KiB")
    version, engine = engine_cpu_ms(data, args.engine_frames, args.age_weights)
    for mode, (cpu, wall) in engine.items():
        print(f"engine, {mode} mode (Predictor.predict in process, {version}, {args.engine_frames} frames): "
              f"CPU {cpu:.1f} ms a frame (median), wall {wall:.1f} ms")
    cpu_ms = engine["video"][0]

    with tempfile.TemporaryDirectory(prefix="bench-live-") as tmp, open(Path(tmp) / "server.log", "wb") as log:
        port = free_port()
        env = server_env(Path(tmp), WMA_LIVE_FRAMES_PER_SECOND="1000", WMA_LIVE_CONNECTIONS=str(max(counts)),
                         WMA_LIVE_IDLE_SECONDS="120")
        if args.age_weights:
            env["WMA_AGE_WEIGHTS"] = str(args.age_weights.resolve())
        proc = start(env, port, log)
        try:
            wait_healthy(f"http://127.0.0.1:{port}", 180, proc)
            server = psutil.Process(proc.pid)
            url = f"ws://127.0.0.1:{port}/live"
            print(f"\n{'clients':>7}  {'answers/s each':>14}  {'total/s':>7}  {'delay median':>12}  {'p95':>6}  "
                  f"{'server ms':>9}  {'server CPU/frame':>16}  faces/frame")
            results = {}
            for n in counts:
                clients, cpu_seconds = asyncio.run(measure(url, data, n, args.seconds, server))
                delays = [d for c in clients for d in c.delays]
                answered = sum(c.answers for c in clients)
                each = [c.answers / args.seconds for c in clients]
                results[n] = (min(each), pct(delays, 95) * 1000)
                errors = sum(c.errors for c in clients)
                print(f"{n:>7}  {min(each):>6.1f} - {max(each):<5.1f}  {answered / args.seconds:>7.1f}  "
                      f"{pct(delays, 50) * 1000:>9.1f} ms  {pct(delays, 95) * 1000:>3.0f} ms  "
                      f"{statistics.median([s for c in clients for s in c.server_ms]):>6.1f} ms  "
                      f"{cpu_seconds / max(answered, 1) * 1000:>13.1f} ms  "
                      f"{sum(c.faces_seen for c in clients) / max(answered, 1):.2f}"
                      + (f"  ({errors} error answers)" if errors else ""))
        finally:
            stop(proc)

    print("\ngoals (issue 26), on this machine now:")
    if 1 in results:
        rate, p95 = results[1]
        print(f"  1 client >= 15 answers/s, p95 <= 80 ms: {rate:.1f}/s, p95 {p95:.0f} ms -> "
              f"{'met' if rate >= 15 and p95 <= 80 else 'NOT met'}")
    if 2 in results:
        print(f"  2 clients >= 10 answers/s each: {results[2][0]:.1f}/s (the slower) -> "
              f"{'met' if results[2][0] >= 10 else 'NOT met'}")
    load = " ".join(f"{x:.1f}" for x in psutil.getloadavg())
    print(f"  CPU per frame <= 10 ms (median, quiet machine): engine, video mode {cpu_ms:.1f} ms -> "
          f"{'met' if cpu_ms <= 10 else 'NOT met'}; load average now {load}")


if __name__ == "__main__":
    main()
