"""What YuNet's ONNX Runtime arena costs in memory and saves in time: `ml.serving.yunet.YuNet`'s `memory` modes
side by side (keep the arena, shrink it after every run, shrink it after large inputs only, no arena).

    .venv/bin/python -m bench.yunet_memory [--photos 200] [--repeat 3]

Memory: each mode in a fresh process set up as the service sets itself up (`tune_allocator` before
loading, `photo_done` after each photo), the served `FaceDetector` on `--photos` mixed photos decoded as
the service decodes them, in the same order for every mode: the 640x480 portrait JPEG, the 12 MP JPEG
(both of bench/predictor.py), the 6-face photo, a 2000x1500 PNG without a face (YuNet's 1280 px pass),
and 8 held-out scenes of the evaluation set. Resident memory (psutil) after start-up, after every 50
photos, and the most seen. Time: the modes' detectors in one process (its allocator tuned as the
service's), taking turns photo by photo, median ms of `detect` per kind of photo (one thread).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
from PIL import Image

from bench.machine import describe
from bench.predictor import photos as predictor_photos
from ml.serving.faces import FaceDetector
from ml.serving.images import load_image
from ml.serving.runtime import photo_done, tune_allocator
from ml.serving.yunet import YUNET_MEMORY, YuNet

ROOT = Path(__file__).resolve().parent.parent
MIB = 1 << 20


def photo_set(detection_set: Path, scenes: int = 8) -> dict[str, bytes]:
    """The kinds of photo, as uploaded bytes."""
    out = dict(predictor_photos())
    # without a face YuNet runs all its passes: 320, 640 and 1280 px
    canvas = Image.open(ROOT / "tests" / "fixtures" / "coffee.png").convert("RGB").resize((2000, 1500))
    buf = io.BytesIO()
    canvas.save(buf, "PNG")
    out["2000x1500 PNG, no face"] = buf.getvalue()
    manifest = detection_set / "manifest.tsv"
    if manifest.exists():
        rows = [r for r in csv.DictReader(manifest.open(), delimiter="\t")
                if r["part"] == "held-out" and r["kind"] == "scene" and r["variant"] == "original"]
        for r in rows[:scenes]:
            out[f"scene {r['file']}"] = (detection_set / "images" / r["file"]).read_bytes()
    return out


def detector(memory: str) -> FaceDetector:
    det = FaceDetector(size=1)
    det._yunet = YuNet(memory=memory)  # the served detector but for its YuNet session's arena
    return det


def measure_memory(memory: str, count: int, detection_set: Path) -> dict[str, object]:
    """In this process (a fresh one): resident MiB after start-up, every 50 photos, and the most."""
    tune_allocator()
    proc = psutil.Process()
    photos = list(photo_set(detection_set).values())
    det = detector(memory)
    det.detect(load_image(photos[0]).rgb)  # start-up ends with a first photo, as after a health check
    photo_done()
    rss = {"start-up": proc.memory_info().rss / MIB}
    most = rss["start-up"]
    for i in range(1, count + 1):
        det.detect(load_image(photos[i % len(photos)]).rgb)
        photo_done()
        now = proc.memory_info().rss / MIB
        most = max(most, now)
        if i % 50 == 0 or i == count:
            rss[f"after {i}"] = now
    rss["most"] = most
    det.close()
    return rss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", type=Path, default=ROOT / "data" / "detection-set")
    parser.add_argument("--photos", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3, help="timing rounds over the photo kinds")
    parser.add_argument("--modes", default=",".join(YUNET_MEMORY))
    parser.add_argument("--memory-of", help=argparse.SUPPRESS)  # the child process: one mode's memory
    args = parser.parse_args()
    if args.memory_of:
        print(json.dumps(measure_memory(args.memory_of, args.photos, args.set)))
        return

    modes = args.modes.split(",")
    print(describe() + f"; load average {os.getloadavg()[0]:.1f} at the start")
    print(f"\nResident memory (MiB), a fresh process per mode, {args.photos} mixed photos")
    for memory in modes:
        child = subprocess.run([sys.executable, __file__, "--memory-of", memory, "--photos", str(args.photos),
                                "--set", str(args.set)], capture_output=True, text=True, check=True)
        rss = json.loads(child.stdout.strip().splitlines()[-1])
        print(f"  {memory:13} " + "  ".join(f"{k} {v:6.1f}" for k, v in rss.items()))

    tune_allocator()  # as the service: with it, every buffer of 1 MiB or more is fresh pages (ml/serving/runtime.py)
    photos = {k: load_image(v).rgb for k, v in photo_set(args.set).items()}
    dets = {m: detector(m) for m in modes}
    times: dict[str, dict[str, list[float]]] = {m: {k: [] for k in photos} for m in modes}
    for _ in range(args.repeat):
        for k, rgb in photos.items():
            for m, det in dets.items():  # the modes take turns on each photo
                t = time.perf_counter()
                det.detect(rgb)
                times[m][k].append(time.perf_counter() - t)
    kinds = ["640x480 one face", "4000x3000 JPEG (12 MP)", "6-face group photo", "2000x1500 PNG, no face"]
    print(f"\nTime of detect (median ms, one thread, modes in turns, {args.repeat} rounds; scenes: median of all)")
    print(f"  {'mode':13} " + " ".join(f"{k:>24}" for k in [*kinds, "held-out scenes"]))
    for m in modes:
        scenes = [t for k, ts in times[m].items() if k.startswith("scene") for t in ts]
        cells = [np.median(times[m][k]) * 1000 for k in kinds if k in times[m]] + [np.median(scenes) * 1000]
        print(f"  {m:13} " + " ".join(f"{c:>21.2f} ms" for c in cells))
        dets[m].close()
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
