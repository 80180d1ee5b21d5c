"""Bulk scoring: `python -m ml batch` on a local Ray against the plain `python -m ml predict` loop,
on the same photos.

    .venv/bin/python -m bench.batch [--data ../shared/data/utkface/images] [--photos 2000] [--small 400]
                                    [--actors 2]

Both commands run as a user runs them (a new process each: Python's start, loading the model and,
for the batch, starting Ray and its actors all count), on the first --photos files of --data in
name order, and again on the first --small; the batch first, then the loop, each line printed as
soon as it is measured. The larger run's wall time is what a user waits; the
difference of the two, (photos - small) / (T_photos - T_small), is the rate once running, without
the fixed costs. CPU time is summed over each command's process tree (Ray's processes included,
read from /proc every 0.2 s), so CPU ms per photo holds however busy the machine is; photos per
second do not. The two commands' ages are compared photo by photo (`ml predict` rounds to 0.1).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from bench.machine import describe

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Timing:
    wall: float  # seconds
    cpu: float  # seconds, user + system, of the command and every process it started


def timed(command: list[str], stdout: Path) -> Timing:
    """Run `command`, following its process tree's CPU time (a process's last reading counts)."""
    cpu: dict[tuple[int, float], float] = {}  # (pid, start time) -> CPU seconds
    start = time.perf_counter()
    with stdout.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.DEVNULL, cwd=ROOT)
        root = psutil.Process(process.pid)
        while process.poll() is None:
            try:
                tree = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                tree = []
            for p in tree:
                with contextlib.suppress(psutil.Error):
                    times = p.cpu_times()
                    cpu[(p.pid, p.create_time())] = times.user + times.system
            time.sleep(0.2)
    if process.returncode != 0:
        raise subprocess.CalledProcessError(process.returncode, command[:4])
    return Timing(time.perf_counter() - start, sum(cpu.values()))


def plain_loop(files: list[str], tmp: Path) -> tuple[Timing, dict[str, float | None]]:
    out = tmp / "predict.jsonl"
    seconds = timed([sys.executable, "-m", "ml", "predict", "--json", *files], out)
    ages = {}
    for line in out.read_text().splitlines():
        row = json.loads(line)
        ages[row["file"]] = row["faces"][0]["age"] if row.get("faces") else None
    return seconds, ages


def ray_batch(files: list[str], tmp: Path, actors: int) -> tuple[Timing, dict[str, float | None]]:
    out = tmp / f"batch-{len(files)}-{actors}.csv"
    seconds = timed([sys.executable, "-m", "ml", "batch", *files, "--out", str(out), "--actors", str(actors),
                     "--quiet"], tmp / "batch.stdout")
    with out.open(newline="") as f:
        ages = {row["file"]: float(row["age"]) if row["age"] else None for row in csv.DictReader(f)}
    return seconds, ages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "utkface" / "images")
    parser.add_argument("--photos", type=int, default=2000)
    parser.add_argument("--small", type=int, default=400)
    parser.add_argument("--actors", type=int, nargs="+", default=[os.cpu_count() or 1])
    args = parser.parse_args()

    files = sorted(str(p.resolve()) for p in args.data.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    files = files[: args.photos]
    size_mb = sum(os.path.getsize(f) for f in files) / 1e6
    print(describe())
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{len(files)} photos from {args.data} ({size_mb:.1f} MB), and the first {args.small} of them\n")

    more = len(files) - args.small
    print(f"{'command':<38} {'wall ' + str(args.small):>9} {'wall ' + str(len(files)):>10} {'photos/s':>9} "
          f"{'once running':>13} {'CPU s ' + str(len(files)):>11} {'CPU ms/photo once running':>26}", flush=True)

    def report(name: str, small: Timing, large: Timing) -> None:
        running = more / (large.wall - small.wall) if large.wall > small.wall else float("nan")
        cpu_ms = 1000 * (large.cpu - small.cpu) / more
        print(f"{name:<38} {small.wall:>8.1f}s {large.wall:>9.1f}s {len(files) / large.wall:>9.1f} {running:>13.1f} "
              f"{large.cpu:>11.1f} {cpu_ms:>26.1f}", flush=True)

    with tempfile.TemporaryDirectory(prefix="bench-batch-") as folder:
        tmp = Path(folder)
        for actors in args.actors:
            small, _ = ray_batch(files[: args.small], tmp, actors)
            large, batch_ages = ray_batch(files, tmp, actors)
            report(f"python -m ml batch, {actors} actor(s)", small, large)
        small, _ = plain_loop(files[: args.small], tmp)
        large, plain_ages = plain_loop(files, tmp)
        report("python -m ml predict (one process)", small, large)

    both = [f for f in files if plain_ages.get(f) is not None and batch_ages.get(f) is not None]
    differences = [abs(plain_ages[f] - batch_ages[f]) for f in both]
    no_face = sum(1 for f in files if plain_ages.get(f) is None)
    same_faces = sum(1 for f in files if (plain_ages.get(f) is None) == (batch_ages.get(f) is None))
    print(f"\nsame face found or not: {same_faces} of {len(files)} photos ({no_face} without a face); "
          f"largest age difference {max(differences, default=0):.3f} years (ml predict rounds to 0.1)")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
