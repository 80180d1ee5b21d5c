"""Face detection: faces found and false faces per category, the old detector and the new side by side.

    .venv/bin/python -m bench.detection [--set data/detection-set] [--utkface ../shared/data/utkface]
                                        [--crops-split test] [--part all|dev|held-out]

Needs the evaluation set that `make detection-set` (bench/detection_set.py) generates. Both detectors
see every image in turn, decoded as the service decodes it, so drift of a shared machine hits both.

- Faces found: a detection matches a face if their boxes overlap by IoU 0.3 or more, or each box
  holds the other's centre (rotated copies only know the upright box around the turned face); each
  face and each detection matches at most once. Where a photo's boxes are unknown, only counts.
- False faces: detections that match no face; the goal is at most one per 10 no-people photos.
- IoU >= 0.5: share of the faces of the upright synthetic scenes whose matching box is that close.
- Gray/sepia vs colour: faces found in the gray (sepia) copies over those found in the originals.
- UTKFace crops: the 200x200 crops of a split where the face fills the frame, with no face found.
- Cost: model runs per photo, BlazeFace + YuNet (a BlazeFace run is about 1.9 ms short-range, 4.4 ms
  full-range on a quiet machine of this kind; a YuNet run costs with its input's size, about 1.3 ms at
  320x240 and 9 ms at 640x480: counts that a busy shared machine does not blur), and the median ms of
  `detect` per photo (one thread), and on two fixed photos: a 640x480 portrait
  (bench/predictor.py's: the astronaut fixture padded to 4:3) and the 6-face photo of `--faces`.

Real photos (`--photos`, bench/photos, labelled by hand): per category, faces aged and false faces aged,
precision, recall and average precision, every box the detector finds (old) against the faces the
gate keeps (new); bench/precision.py has the same with degraded faces and UTKFace crops.

Detectors: `old (v1)` and `BlazeFace (v2)` are `DetectorSettings.v1()` and `.v2()` (BlazeFace's passes
before and after i12), `new` the served one (BlazeFace and YuNet), `YuNet alone` YuNet on the photo
reduced to 1280 px at most, score 0.6, as a reference.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from bench.machine import describe
from ml.serving import blazeface
from ml.serving.faces import DetectorSettings, Face, FaceDetector
from ml.serving.images import load_image
from ml.serving.yunet import YuNet

ROOT = Path(__file__).resolve().parent.parent


class YuNetAlone:
    """YuNet by itself, for comparison: the photo reduced to 1280 px at most, score 0.6."""

    def __init__(self, side: int = 1280, min_score: float = 0.6, min_face: float = 12.0) -> None:
        self.yunet, self.side, self.min_score, self.min_face = YuNet(), side, min_score, min_face

    def detect(self, rgb: np.ndarray) -> list[Face]:
        faces = self.yunet.detect(rgb, self.side, self.min_score)
        return [f for f in faces if min(f.box.width, f.box.height) >= self.min_face]

    def close(self) -> None:
        pass


DETECTORS = {"old (v1)": DetectorSettings.v1(), "BlazeFace (v2)": DetectorSettings.v2(), "YuNet alone": None,
             "new": DetectorSettings(), "new, no turned pass": replace(DetectorSettings(), turned_from=0)}
DEFAULT_DETECTORS = "old (v1),BlazeFace (v2),YuNet alone,new"
SIZE_BANDS = [(0, 32), (32, 64), (64, 10_000)]


MODEL_RUNS: list[int] = [0, 0]  # BlazeFace runs (either model) and YuNet runs since the last reset
_run = blazeface.run
_yunet_detect = YuNet.detect


def _counted_run(*args, **kwargs):  # type: ignore[no-untyped-def]
    MODEL_RUNS[0] += 1
    return _run(*args, **kwargs)


def _counted_yunet(*args, **kwargs):  # type: ignore[no-untyped-def]
    MODEL_RUNS[1] += 1
    return _yunet_detect(*args, **kwargs)


# counts the detector's passes: a cost that a busy machine does not blur
blazeface.run = _counted_run
YuNet.detect = _counted_yunet  # type: ignore[method-assign]


def make_detector(name: str) -> FaceDetector | YuNetAlone:
    settings = DETECTORS[name]
    return YuNetAlone() if settings is None else FaceDetector(settings, size=1)


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / max(1e-9, a[2] * a[3] + b[2] * b[3] - inter)


def _holds(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    cx, cy = b[0] + b[2] / 2, b[1] + b[3] / 2
    return a[0] <= cx <= a[0] + a[2] and a[1] <= cy <= a[1] + a[3]


def matches(truth: list[tuple[float, ...]], found: list[tuple[float, ...]]) -> list[tuple[int, int, float]]:
    """(true box, detection, IoU) for each match: IoU 0.3, or each box holds the other's centre; greedy,
    best IoU first; each box in at most one match."""
    candidates = sorted(((iou(t, f), i, j) for i, t in enumerate(truth) for j, f in enumerate(found)), reverse=True)
    result, used_truth, used_found = [], set(), set()
    for v, i, j in candidates:
        if i in used_truth or j in used_found:
            continue
        if v >= 0.3 or (_holds(truth[i], found[j]) and _holds(found[j], truth[i])):
            result.append((i, j, v))
            used_truth.add(i)
            used_found.add(j)
    return result


def match(truth: list[tuple[float, ...]], found: list[tuple[float, ...]]) -> list[float | None]:
    """For each true box, the IoU of the detection matched to it (None: missed)."""
    result: list[float | None] = [None] * len(truth)
    for i, _, v in matches(truth, found):
        result[i] = v
    return result


class Tally:
    def __init__(self) -> None:
        self.images = self.faces = self.found = self.false = self.tight = self.tight_of = 0
        self.by_size: dict[int, list[int]] = defaultdict(lambda: [0, 0])

    def add(self, row: dict[str, str], boxes: list[tuple[float, ...]] | None, found: list[tuple[float, ...]]) -> int:
        self.images += 1
        expected = int(row["faces"])
        self.faces += expected
        if boxes is None:
            hit = min(len(found), expected)
            self.false += max(0, len(found) - expected)
        else:
            ious = match(boxes, found)
            hit = sum(v is not None for v in ious)
            self.false += len(found) - hit
            if row["kind"] == "scene" and row["variant"] == "original":
                self.tight_of += len(boxes)
                self.tight += sum(v is not None and v >= 0.5 for v in ious)
                for b, v in zip(boxes, ious, strict=True):
                    band = next(k for k, (lo, hi) in enumerate(SIZE_BANDS) if lo <= b[2] < hi)
                    self.by_size[band][0] += 1
                    self.by_size[band][1] += v is not None
        self.found += hit
        return hit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", type=Path, default=ROOT / "data" / "detection-set")
    parser.add_argument("--faces", type=Path, default=ROOT.parent / "shared" / "data" / "faces")
    parser.add_argument("--utkface", type=Path, default=ROOT.parent / "shared" / "data" / "utkface")
    parser.add_argument("--crops-split", default="test", help="UTKFace split whose crops are counted (not tuned on)")
    parser.add_argument("--crops", type=int, default=0, help="at most this many crops (0: all of the split)")
    parser.add_argument("--part", default="all", choices=["all", "dev", "held-out", "none"],
                        help="part of the set to run (none: only the UTKFace crops and the fixed photos)")
    parser.add_argument("--repeat", type=int, default=40, help="times each fixed photo is timed")
    parser.add_argument("--detectors", default=DEFAULT_DETECTORS, help="comma-separated, of: " + ", ".join(DETECTORS))
    parser.add_argument("--photos", type=Path, default=ROOT / "bench" / "photos",
                        help="real photos labelled by hand: which boxes get an age, old and gated (bench/precision.py)")
    args = parser.parse_args()
    manifest = args.set / "manifest.tsv"
    if args.part != "none" and not manifest.exists():
        sys.exit(f"{manifest} is missing: run `make detection-set` first")
    print(describe() + f"; load average {os.getloadavg()[0]:.1f} at the start")

    names = args.detectors.split(",")
    dets = {n: make_detector(n) for n in names}
    rows = [] if args.part == "none" else [
        r for r in csv.DictReader(manifest.open(), delimiter="\t") if args.part in ("all", r["part"])]
    tallies: dict[str, dict[tuple[str, str, str], Tally]] = {n: defaultdict(Tally) for n in names}
    times: dict[str, dict[str, list[float]]] = {n: defaultdict(list) for n in names}
    runs: dict[str, dict[str, list[tuple[int, int]]]] = {n: defaultdict(list) for n in names}
    hits: dict[str, dict[tuple[str, str], int]] = {n: {} for n in names}  # (item, variant) -> faces found

    for row in rows:
        img = load_image((args.set / "images" / row["file"]).read_bytes())
        boxes = None if row["kind"] == "photo" and not row["boxes"] else [
            tuple(float(c) * img.scale for c in b.split(",")) for b in row["boxes"].split(";") if b]
        part = "" if row["kind"] != "scene" else row["part"]
        for n, det in dets.items():
            MODEL_RUNS[:] = [0, 0]
            t = time.perf_counter()
            faces = det.detect(img.rgb)
            times[n][row["kind"]].append(time.perf_counter() - t)
            runs[n][row["kind"]].append((MODEL_RUNS[0], MODEL_RUNS[1]))
            found = [(f.box.x, f.box.y, f.box.width, f.box.height) for f in faces]
            hit = tallies[n][(row["kind"], part, row["variant"])].add(row, boxes, found)
            hits[n][(row["file"].split("--")[0], row["variant"])] = hit

    def pct(a: int, b: int) -> str:
        return f"{a / b:7.1%}" if b else "      -"

    print("\nFaces found (share of faces) and false faces (detections matching no face), per category")
    header = f"{'kind':10} {'part':8} {'variant':13} {'images':>6} {'faces':>6}"
    for n in names:
        header += f" | {n + ' found':>14} {'false':>6}"
    print(header)
    keys = sorted({k for t in tallies.values() for k in t}, key=lambda k: (k[0], k[1], _order(k[2])))
    for key in keys:
        first = tallies[names[0]][key]
        line = f"{key[0]:10} {key[1]:8} {key[2]:13} {first.images:>6} {first.faces:>6}"
        for n in names:
            t = tallies[n][key]
            line += f" | {pct(t.found, t.faces):>14} {t.false:>6}"
        print(line)

    print("\nSummary")
    for n in names:
        ts = tallies[n]
        noface = [t for k, t in ts.items() if k[0] == "no-people"]
        nf_images, nf_false = sum(t.images for t in noface), sum(t.false for t in noface)
        worst = min(((t.found / t.faces, "/".join(x for x in k if x)) for k, t in ts.items() if t.faces),
                    default=(float("nan"), "-"))
        print(f"  {n}: worst category {worst[1]} {worst[0]:.1%} (goal >= 97%); "
              f"false faces {nf_false} on {nf_images} no-people images = {10 * nf_false / max(1, nf_images):.2f} "
              f"per 10 (goal <= 1)")
        for part in ("dev", "held-out"):
            t = ts.get(("scene", part, "original"))
            if t and t.tight_of:
                bands = " ".join(f"{lo}-{hi if hi < 10_000 else ''}px {pct(c[1], c[0]).strip()} of {c[0]}"
                                 for (lo, hi), c in zip(SIZE_BANDS, [t.by_size[i] for i in range(3)], strict=True))
                print(f"    upright scenes ({part}): IoU>=0.5 for {pct(t.tight, t.tight_of).strip()} of "
                      f"{t.tight_of} faces (goal >= 95%); found by face width: {bands}")
        for kind in ("photo", "scene"):
            for v in ("gray", "sepia"):
                pairs = [(h, hits[n].get((item, "original"))) for (item, var), h in hits[n].items()
                         if var == v and (kind == "photo") == (not item.startswith("scene"))]
                pairs = [(a, b) for a, b in pairs if b is not None]
                num, den = sum(a for a, _ in pairs), sum(b for _, b in pairs)
                print(f"    {kind}s: {v} copies find {num} of the {den} faces found in their colour originals "
                      f"= {pct(num, den).strip()} (goal >= 95%)")

    crops = crops_of(args.utkface, args.crops_split, args.crops)
    fixed = fixed_photos(args.faces)
    fixed_ms: dict[str, list[list[float]]] = {n: [[] for _ in fixed] for n in names}
    fixed_runs: dict[str, list[tuple[int, int]]] = {n: [] for n in names}
    for n, det in dets.items():
        for rgb in fixed.values():
            MODEL_RUNS[:] = [0, 0]
            det.detect(rgb)
            fixed_runs[n].append((MODEL_RUNS[0], MODEL_RUNS[1]))
    for _ in range(args.repeat):  # the detectors take turns, so that the machine's load hits each alike
        for n, det in dets.items():
            for i, rgb in enumerate(fixed.values()):
                t = time.perf_counter()
                det.detect(rgb)
                fixed_ms[n][i].append(time.perf_counter() - t)
    print(f"\nUTKFace {args.crops_split} crops without a face (goal <= 1%); model runs per photo, BlazeFace + YuNet "
          f"(mean), and time (median ms, one thread; the fixed photos timed in turns, {args.repeat} times each)")
    print(f"{'detector':20} {'crops missed':>16} " + " ".join(f"{k:>22}" for k in ["photos", "scenes", "no-people"])
          + " " + " ".join(f"{k:>22}" for k in fixed))
    for n, det in dets.items():
        missed = sum(1 for rgb in crops if not det.detect(rgb))
        line = f"{n:20} {missed:>5}/{len(crops)} {pct(missed, len(crops))} "
        line += " ".join(f"{_runs(runs[n][k]):>9} runs {_ms(times[n][k]):>8}" for k in ["photo", "scene", "no-people"])
        line += " " + " ".join(f"{b:>3}+{y} runs {np.median(ms) * 1000:>7.2f} ms"
                               for (b, y), ms in zip(fixed_runs[n], fixed_ms[n], strict=True))
        print(line)
        det.close()
    if args.photos.exists():
        from bench.precision import photos
        from ml.serving.predictor import Predictor

        with Predictor.load() as predictor:
            photos(predictor, args.photos)
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


def _runs(runs: list[tuple[int, int]]) -> str:
    if not runs:
        return "-"
    return f"{np.mean([r[0] for r in runs]):.1f}+{np.mean([r[1] for r in runs]):.1f}"


def _ms(times: list[float]) -> str:
    return f"{np.median(times) * 1000:.1f} ms" if times else "-"


def _order(variant: str) -> int:
    from bench.detection_set import VARIANTS

    return VARIANTS.index(variant) if variant in VARIANTS else 99


def crops_of(utkface: Path, split: str, limit: int) -> list[np.ndarray]:
    names = sorted(r["file"] for r in csv.DictReader((ROOT / "ml" / "splits" / "utkface.csv").open())
                   if r["split"] == split)
    if limit:
        names = names[:: max(1, len(names) // limit)][:limit]
    return [load_image((utkface / "images" / n).read_bytes()).rgb for n in names]


def fixed_photos(faces: Path) -> dict[str, np.ndarray]:
    # the 640x480 one-face photo of bench/predictor.py: the astronaut padded to 4:3, then resized
    canvas = Image.new("RGB", (683, 512), (128, 128, 128))
    canvas.paste(Image.open(ROOT / "tests" / "fixtures" / "astronaut.png").convert("RGB"), (85, 0))
    return {"640x480 portrait": np.asarray(canvas.resize((640, 480), Image.Resampling.LANCZOS)),
            "6-face photo": load_image((faces / "multi_insightface_t1.jpg").read_bytes()).rgb}


if __name__ == "__main__":
    main()
