"""Predictor latency per stage, the served runtime against the torch reference, and memory. `make bench`.

    .venv/bin/python bench/predictor.py [--repeat 50] [--weights W.onnx] [--threads N]

Photos: a 640x480 one-face JPEG and a 12-megapixel (4000x3000) JPEG, both made from the astronaut
fixture, and the 6-face group photo from ../shared/data/faces when present. The same predictor
(detector, aligner) runs each photo with the served age model (ONNX Runtime, `ml.runtime`) and with
the torch reference made from the .safetensors beside it (the old path, while torch is installed),
alternately, after a warm-up; medians per stage (decode, detect, align, age) and end to end. One
photo at a time: its age step may use every CPU (`ml.runtime.CpuShare`), and torch gets as many
threads; `--threads 1` measures a photo under load instead (one CPU each). Then the age network on
N chips one at a time and in one batch, and the resident memory: the served path is measured before
torch is imported.
"""

from __future__ import annotations

import argparse
import io
import os
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
from ml import runtime  # noqa: E402
from ml.predictor import DEFAULT_AGE_WEIGHTS, Predictor  # noqa: E402

GROUP_PHOTO = ROOT.parent / "shared" / "data" / "faces" / "multi_insightface_t1.jpg"
STAGES = ("decode", "detect", "align", "age")
# Issue 11's figures for main (2026-12-01, torch, same machine) and its goals, ms.
MAIN = {"640x480 one face": "21.2", "4000x3000 JPEG (12 MP)": "39-47", "6-face group photo": "63"}
GOALS = {"640x480 one face": "<= 6", "4000x3000 JPEG (12 MP)": "<= 30", "6-face group photo": "<= 20"}


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


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


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


def torch_reference(weights: Path, threads: int) -> runtime.AgeEstimator | None:
    """The old path: the torch model of the .safetensors the served file was exported from."""
    source = weights.with_suffix(".safetensors")
    if not source.exists():
        return None
    try:
        import torch

        from ml.agemodel import load_age_model
    except ImportError:
        return None
    torch.set_num_threads(threads)
    return load_age_model(source)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--weights", type=Path, default=DEFAULT_AGE_WEIGHTS, help="served age model (.onnx)")
    parser.add_argument("--threads", type=int, default=None,
                        help="most threads of one age step (default: the CPUs, as for a photo alone)")
    args = parser.parse_args()
    threads = args.threads or runtime.available_cpus()

    print(describe())
    before = rss_mb()
    t = time.perf_counter()
    served = Predictor.load(args.weights, threads=threads)
    load_s = time.perf_counter() - t
    data = photos()
    for _ in range(3):
        for d in data.values():
            served.predict(d)  # the detectors allocate their working memory on first use
    print(f"\nserved model {served.version} ({args.weights.name}, ONNX Runtime, {threads} thread(s)): loaded in "
          f"{load_s * 1000:.0f} ms; resident memory {before:.0f} MB before, {rss_mb():.0f} MB after loading and "
          f"a few photos (peak {peak_mb():.0f} MB), torch imported: {'torch' in sys.modules}")

    reference = torch_reference(args.weights, threads)
    paths = {"onnx": served}
    if reference is not None:
        paths["torch"] = Predictor(served.detector, served.aligner, reference, served.settings)
        print(f"torch reference {reference.version} ({args.weights.with_suffix('.safetensors').name}, {threads} "
              f"thread(s)); resident memory {rss_mb():.0f} MB with torch imported and loaded")
    else:
        print("no torch reference (torch not installed, or no .safetensors beside the served file)")

    print(f"\nmedian of {args.repeat} runs, milliseconds; the two paths alternate on each photo")
    print(f"{'photo':26} {'path':5} {'faces':>5} " + " ".join(f"{s:>7}" for s in STAGES)
          + f" {'total':>7}   {'main':>6} {'goal':>6}")
    for name, photo in data.items():
        for p in paths.values():
            for _ in range(3):
                p.predict(photo)
        runs: dict[str, list] = {k: [] for k in paths}
        for _ in range(args.repeat):
            for key, p in paths.items():
                t = time.perf_counter()
                result = p.predict(photo)
                runs[key].append((time.perf_counter() - t, result.timings, len(result.faces)))
        for key in reversed(list(paths)):  # torch first: old, then new
            r = runs[key]
            med = {s: statistics.median(x[1].get(s, 0.0) for x in r) * 1000 for s in STAGES}
            total = statistics.median(x[0] for x in r) * 1000
            tail = f"   {MAIN[name]:>6} {GOALS[name]:>6}" if key == "onnx" and name in MAIN else ""
            print(f"{name:26} {key:5} {r[0][2]:>5} " + " ".join(f"{med[s]:7.2f}" for s in STAGES)
                  + f" {total:7.2f}{tail}")

    img = served.decode(data["640x480 one face"])
    chip = served.chips(img, served.detector.detect(img.rgb)[:1])
    print("age network alone, milliseconds per face (median)")
    for n in (1, 6, 16):
        chips = np.repeat(chip, n, axis=0)
        for key, p in reversed(list(paths.items())):
            model = p.age_model
            one, batch = [], []
            for _ in range(max(5, args.repeat // 2)):
                t = time.perf_counter()
                for i in range(n):
                    model.estimate(chips[i : i + 1])
                one.append((time.perf_counter() - t) / n)
                t = time.perf_counter()
                model.estimate(chips)
                batch.append((time.perf_counter() - t) / n)
            print(f"  {n:2} faces, {key:5}: one at a time {statistics.median(one) * 1000:6.2f}, "
                  f"all in one batch {statistics.median(batch) * 1000:6.2f}")
    print(f"resident memory after these runs: {rss_mb():.0f} MB (peak {peak_mb():.0f} MB)")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    served.close()


if __name__ == "__main__":
    main()
