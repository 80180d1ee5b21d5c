"""Predictor latency per stage, batching, and memory. `make bench` runs it.

    .venv/bin/python bench/predictor.py [--repeat 50] [--weights W]

Photos: a 640x480 one-face JPEG and a 12-megapixel (4000x3000) baseline JPEG, both made from the
astronaut fixture, and the 6-face group photo from ../shared/data/faces when present. Each is
predicted `--repeat` times after a warm-up; medians are printed per stage (decode, detect, align,
age) and end to end. Then the age network on N chips one at a time versus in one batch, and the
resident memory after loading. With several `--weights`, each model is measured in turn, in this
one run (memory figures are for the first; later ones share the process).
"""

from __future__ import annotations

import argparse
import io
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
# Import from the repository root, not bench/ (whose http.py would shadow the standard `http`).
sys.path[0] = str(ROOT)

from bench.machine import describe  # noqa: E402
from ml.predictor import Predictor  # noqa: E402

GROUP_PHOTO = ROOT.parent / "shared" / "data" / "faces" / "multi_insightface_t1.jpg"


def jpeg(img: Image.Image, size: tuple[int, int], quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.resize(size, Image.Resampling.LANCZOS).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def photos() -> dict[str, bytes]:
    astronaut = Image.open(ROOT / "tests" / "fixtures" / "astronaut.png").convert("RGB")
    # 640x480: the portrait padded to 4:3 so the face keeps its proportions
    canvas = Image.new("RGB", (683, 512), (128, 128, 128))
    canvas.paste(astronaut, (85, 0))
    out = {
        "640x480 one face": jpeg(canvas, (640, 480)),
        "4000x3000 JPEG (12 MP)": jpeg(canvas, (4000, 3000)),
    }
    if GROUP_PHOTO.exists():
        out["6-face group photo"] = GROUP_PHOTO.read_bytes()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--weights", type=Path, action="append", help="age model; repeat to compare (default: shipped)")
    args = parser.parse_args()

    print(describe())
    for weights in args.weights or [None]:
        measure(weights, args.repeat)


def measure(weights: Path | None, repeat: int) -> None:
    before = rss_mb()
    t = time.perf_counter()
    predictor = Predictor.load(weights)
    load_s = time.perf_counter() - t
    after = rss_mb()
    print(f"\nmodel {predictor.version}: loaded in {load_s * 1000:.0f} ms; resident memory {before:.0f} MB before, "
          f"{after:.0f} MB after loading (peak {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB)")

    stages = ("decode", "detect", "align", "age")
    print(f"median of {repeat} runs, milliseconds")
    print(f"{'photo':26} {'faces':>5} " + " ".join(f"{s:>7}" for s in stages) + f" {'total':>7}")
    for name, data in photos().items():
        for _ in range(3):
            predictor.predict(data)
        runs = []
        for _ in range(repeat):
            t = time.perf_counter()
            result = predictor.predict(data)
            runs.append((time.perf_counter() - t, result.timings, len(result.faces)))
        med = {s: statistics.median(r[1].get(s, 0.0) for r in runs) * 1000 for s in stages}
        total = statistics.median(r[0] for r in runs) * 1000
        print(f"{name:26} {runs[0][2]:>5} " + " ".join(f"{med[s]:7.2f}" for s in stages) + f" {total:7.2f}")

    img = predictor.decode(photos()["640x480 one face"])
    chip = predictor.chips(img, predictor.detector.detect(img.rgb)[:1])
    print("age network, milliseconds per face (median)")
    for n in (1, 6, 16):
        chips = np.repeat(chip, n, axis=0)
        one, batch = [], []
        for _ in range(max(5, repeat // 2)):
            t = time.perf_counter()
            for i in range(n):
                predictor.age_model.estimate(chips[i : i + 1])
            one.append((time.perf_counter() - t) / n)
            t = time.perf_counter()
            predictor.age_model.estimate(chips)
            batch.append((time.perf_counter() - t) / n)
        print(f"  {n:2} faces: one at a time {statistics.median(one) * 1000:6.2f}, "
              f"all in one batch {statistics.median(batch) * 1000:6.2f}")
    print(f"resident memory after these runs: {rss_mb():.0f} MB "
          f"(peak {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB)")
    predictor.close()


if __name__ == "__main__":
    main()
