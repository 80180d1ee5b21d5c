"""Predictor latency per stage, the served runtime against the torch reference, and memory. `make bench`.

    .venv/bin/python -m bench.predictor [--repeat 50] [--weights W.onnx] [--threads N]

Photos: a 640x480 one-face JPEG and a 12-megapixel (4000x3000) JPEG, both made from the astronaut
fixture, and the 6-face group photo from ../shared/data/faces when present. The same predictor
(detector, aligner) runs each photo with the served age model (ONNX Runtime, `ml.serving.runtime`) and with
the torch reference made from the .safetensors beside it (the old path, while torch is installed),
alternately, after a warm-up; medians per stage (decode, detect, align, age) and end to end. Each
path runs with one thread (a photo under load: one CPU each) and with every CPU (a photo alone on an
idle machine, whose age step `ml.serving.runtime.CpuShare` spreads out; torch gets as many threads; here it
spreads whatever the load average says, so that what spreading gives on this machine shows). Then the age network on N
chips one at a time and in one batch, and the resident memory: the served path is measured before
torch is imported. `BlazeFace v2` paths: the served age model behind the detector as it was before
YuNet joined it (`DetectorSettings.v2()`), for the old and new detection side by side.
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

from bench.machine import describe
from ml.paths import DEFAULT_AGE_WEIGHTS
from ml.serving import runtime
from ml.serving.faces import DetectorSettings, FaceDetector
from ml.serving.predictor import Predictor

ROOT = Path(__file__).resolve().parent.parent

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


def torch_reference(weights: Path) -> tuple[runtime.AgeEstimator, object] | None:
    """The old path: the torch model of the .safetensors the served file was exported from, and torch."""
    source = weights.with_suffix(".safetensors")
    if not source.exists():
        return None
    try:
        import torch

        from ml.training.agemodel import load_age_model
    except ImportError:
        return None
    return load_age_model(source), torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--weights", type=Path, default=DEFAULT_AGE_WEIGHTS, help="served age model (.onnx)")
    parser.add_argument("--threads", type=int, nargs="+", default=None,
                        help="most threads of one age step, each measured (default: 1, as for a photo under "
                             "load, and the CPUs, as for a photo alone)")
    args = parser.parse_args()
    thread_counts = args.threads or sorted({1, runtime.available_cpus()})

    print(describe())
    before = rss_mb()
    t = time.perf_counter()
    served = Predictor.load(args.weights, threads=thread_counts[0])
    load_s = time.perf_counter() - t
    data = photos()
    for _ in range(3):
        for d in data.values():
            served.predict(d)  # the detectors allocate their working memory on first use
    print(f"\nserved model {served.version} ({args.weights.name}, ONNX Runtime): loaded in {load_s * 1000:.0f} ms; "
          f"resident memory {before:.0f} MB before, {rss_mb():.0f} MB after loading and a few photos "
          f"(peak {peak_mb():.0f} MB), torch imported: {'torch' in sys.modules}")

    # (label, predictor, torch threads or None); the same detector and aligner throughout.
    paths: list[tuple[str, Predictor, int | None]] = []
    blazeface_v2 = FaceDetector(DetectorSettings.v2(), size=1)
    reference = torch_reference(args.weights)
    if reference is not None:
        print(f"torch reference ({args.weights.with_suffix('.safetensors').name}); resident memory {rss_mb():.0f} MB "
              "with torch imported and loaded")
    else:
        print("no torch reference (torch not installed, or no .safetensors beside the served file)")
    for n in thread_counts:
        if reference is not None:
            paths.append((f"torch, {n} thr", Predictor(served.detector, served.aligner, reference[0],
                                                       served.settings), n))
        cpus = runtime.CpuShare(n, load=lambda: 0.0)  # spread whatever else the machine runs: measure it
        model = runtime.load_age_model(args.weights, cpus)
        paths.append((f"onnx, {n} thr", Predictor(served.detector, served.aligner, model, served.settings, cpus), None))
        paths.append((f"BlazeFace v2, {n} thr", Predictor(blazeface_v2, served.aligner, model, served.settings, cpus),
                      None))

    def predict(p: Predictor, torch_threads: int | None, photo: bytes):  # noqa: ANN202
        if torch_threads and reference is not None:
            reference[1].set_num_threads(torch_threads)  # type: ignore[attr-defined]
        return p.predict(photo)

    print(f"\nmedian of {args.repeat} runs, milliseconds; the paths alternate on each photo; CPU: the process's "
          "CPU time per photo, all threads (what it costs, less sensitive to other load than the time); main: "
          "issue 11's figure for main (torch, one thread), goal: its goal")
    print(f"{'photo':24} {'path':18} {'faces':>5} " + " ".join(f"{s:>7}" for s in STAGES)
          + f" {'total':>7} {'CPU':>7}   {'main':>6} {'goal':>6}")
    for name, photo in data.items():
        for _, p, k in paths:
            for _ in range(3):
                predict(p, k, photo)
        runs: list[list] = [[] for _ in paths]
        for _ in range(args.repeat):
            for i, (_, p, k) in enumerate(paths):
                t, c = time.perf_counter(), time.process_time()
                result = predict(p, k, photo)
                runs[i].append((time.perf_counter() - t, result.timings, len(result.faces), time.process_time() - c))
        for (label, _, k), r in zip(paths, runs, strict=True):
            med = {s: statistics.median(x[1].get(s, 0.0) for x in r) * 1000 for s in STAGES}
            total = statistics.median(x[0] for x in r) * 1000
            cpu = statistics.median(x[3] for x in r) * 1000
            tail = f"   {MAIN[name]:>6} {GOALS[name]:>6}" if k is None and name in MAIN else ""
            print(f"{name:24} {label:18} {r[0][2]:>5} " + " ".join(f"{med[s]:7.2f}" for s in STAGES)
                  + f" {total:7.2f} {cpu:7.2f}{tail}")

    img = served.decode(data["640x480 one face"])
    chip = served.chips(img, served.detector.detect(img.rgb)[:1])
    print("age network alone, milliseconds per face (median)")
    for n in (1, 6, 16):
        chips = np.repeat(chip, n, axis=0)
        for label, p, k in paths:
            if k and reference is not None:
                reference[1].set_num_threads(k)  # type: ignore[attr-defined]
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
            print(f"  {n:2} faces, {label:18}: one at a time {statistics.median(one) * 1000:6.2f}, "
                  f"all in one batch {statistics.median(batch) * 1000:6.2f}")
    print(f"resident memory after these runs: {rss_mb():.0f} MB (peak {peak_mb():.0f} MB)")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for _, p, _ in paths:
        p.cpus.close()
    blazeface_v2.close()
    served.close()


if __name__ == "__main__":
    main()
