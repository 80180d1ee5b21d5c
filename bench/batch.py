"""Bulk scoring: `python -m ml batch` on a local Ray against the plain `python -m ml predict` loop,
on the same photos.

    .venv/bin/python bench/batch.py [--data ../shared/data/utkface/images] [--photos 2000] [--small 400]
                                    [--actors 2]

Both commands run as a user runs them (a new process each: Python's start, loading the model and,
for the batch, starting Ray and its actors all count), on the first --photos files of --data in
name order, and again on the first --small. The larger run's wall time is what a user waits; the
difference of the two, (photos - small) / (T_photos - T_small), is the rate once running, without
the fixed costs. The two commands' ages are compared photo by photo (`ml predict` rounds to 0.1).
Then the same arithmetic for more cores.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Run as a script, bench/ is first on the import path, and bench/http.py would shadow `http`.
if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    del sys.path[0]
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.machine import describe  # noqa: E402


def timed(command: list[str], stdout: Path) -> float:
    start = time.perf_counter()
    with stdout.open("w") as out:
        subprocess.run(command, stdout=out, stderr=subprocess.DEVNULL, check=True, cwd=ROOT, timeout=3600)
    return time.perf_counter() - start


def plain_loop(files: list[str], tmp: Path) -> tuple[float, dict[str, float | None]]:
    out = tmp / "predict.jsonl"
    seconds = timed([sys.executable, "-m", "ml", "predict", "--json", *files], out)
    ages = {}
    for line in out.read_text().splitlines():
        row = json.loads(line)
        ages[row["file"]] = row["faces"][0]["age"] if row.get("faces") else None
    return seconds, ages


def ray_batch(files: list[str], tmp: Path, actors: int) -> tuple[float, dict[str, float | None]]:
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

    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as folder:
        tmp = Path(folder)
        small, _ = plain_loop(files[: args.small], tmp)
        large, plain_ages = plain_loop(files, tmp)
        results["python -m ml predict (one process)"] = (small, large)
        for actors in args.actors:
            small, _ = ray_batch(files[: args.small], tmp, actors)
            large, batch_ages = ray_batch(files, tmp, actors)
            results[f"python -m ml batch, {actors} actor(s)"] = (small, large)

    print(f"{'command':<40} {'wall ' + str(args.small):>10} {'wall ' + str(len(files)):>11} "
          f"{'photos/s overall':>17} {'photos/s once running':>22}")
    for name, (small, large) in results.items():
        running = (len(files) - args.small) / (large - small) if large > small else float("nan")
        print(f"{name:<40} {small:>9.1f}s {large:>10.1f}s {len(files) / large:>17.1f} {running:>22.1f}")

    both = [f for f in files if plain_ages.get(f) is not None and batch_ages.get(f) is not None]
    differences = [abs(plain_ages[f] - batch_ages[f]) for f in both]
    no_face = sum(1 for f in files if plain_ages.get(f) is None)
    same_faces = sum(1 for f in files if (plain_ages.get(f) is None) == (batch_ages.get(f) is None))
    print(f"\nsame face found or not: {same_faces} of {len(files)} photos ({no_face} without a face); "
          f"largest age difference {max(differences, default=0):.3f} years (ml predict rounds to 0.1)")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
