"""Which faces are worth an age: the age error of validation faces made small or blurred, and where
the sharpness measure the gate and the interval share puts them.

    .venv/bin/python -m bench.face_quality [--utkface ../shared/data/utkface] [--faces 300]

UTKFace validation faces only (ml/splits/utkface.csv; never the test split). Each face is set in a
gray canvas (as bench/detection_set.py does) and degraded: its box made 64, 40, 32, 24, 20, 16 or 12
px wide (the photo reduced), or blurred (Gaussian, sigma a fraction of the box's width: a face out of
focus or moving). The chip is aligned in the face's known box, so that what is measured is the age
step on a poor face, not the detector. For each level: the mean absolute error against a sharp face's,
and how the gate's measures (box width, the chip's sharpness by `ml.serving.quality`) fall. A level is
worth an age while its error stays within 1.5x of the sharp pass; where it doubles the gate must set
the face aside.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from bench.detection_set import CANVAS, face_pool
from bench.machine import describe
from ml.paths import DEFAULT_AGE_WEIGHTS
from ml.serving import gate, quality
from ml.serving.align import FaceAligner
from ml.serving.faces import Box
from ml.serving.runtime import load_age_model
from ml.training.data import parse_name

ROOT = Path(__file__).resolve().parent.parent
SIZES = [64, 40, 32, 24, 20, 16, 12]
BLURS = [0.01, 0.02, 0.03, 0.04, 0.06, 0.08]  # sigma as a fraction of the box's width


def degraded(name: str, box: tuple[float, ...], utkface: Path, level: tuple[str, float]) -> tuple[np.ndarray, Box]:
    """The face at `level` on a gray canvas, and its box there."""
    crop = Image.open(utkface / "images" / name).convert("RGB").resize((200, 200))
    fx, fy, fw, fh = box
    kind, value = level
    s = 1.0
    if kind == "size":
        s = value / fw
        crop = crop.resize((max(4, round(200 * s)),) * 2, Image.Resampling.LANCZOS)
    elif kind == "blur":
        crop = crop.filter(ImageFilter.GaussianBlur(value * fw))
    side = CANVAS if kind != "size" else max(3 * crop.width, 64)
    canvas = Image.new("RGB", (side, side), (128, 128, 128))
    o = (side - crop.width) // 2
    canvas.paste(crop, (o, o))
    return np.asarray(canvas), Box(o + fx * s, o + fy * s, fw * s, fh * s)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--utkface", type=Path, default=ROOT.parent / "shared" / "data" / "utkface")
    ap.add_argument("--faces", type=int, default=300)
    args = ap.parse_args()
    print(describe())
    pool = face_pool(args.utkface)
    rng = np.random.default_rng(22)
    chosen = [pool[i] for i in sorted(rng.choice(len(pool), min(args.faces, len(pool)), replace=False))]
    truth = np.array([parse_name(n)[0] for n, _ in chosen], np.float32)
    aligner, model = FaceAligner(), load_age_model(DEFAULT_AGE_WEIGHTS)
    levels = [("sharp", 0.0)] + [("size", float(s)) for s in SIZES] + [("blur", b) for b in BLURS]
    rows = []
    for level in levels:
        chips, widths = [], []
        for name, box in chosen:
            rgb, b = degraded(name, box, args.utkface, level)
            chips.append(aligner.chip(rgb, b))
            widths.append(b.width)
        c = np.stack(chips)
        ages = np.array([e.age for e in model.estimate(c)], np.float32)
        sharp = quality.sharpness(c).astype(np.float32)
        rows.append((level, float(np.mean(np.abs(ages - truth))), sharp, float(np.median(widths))))
    base = rows[0][1]
    print(f"\n{len(chosen)} UTKFace validation faces, model {model.version}; sharp pass MAE {base:.2f}")
    print("| level | box px (median) | MAE | x sharp | chip sharpness p10 / median / p90 | kept by the gate |")
    print("|---|---|---|---|---|---|")
    for (kind, value), mae, sharp, width in rows:
        label = "sharp" if kind == "sharp" else (f"{value:.0f} px" if kind == "size" else f"blur {value:.0%}")
        kept = np.mean([gate.judge(width, s).reason is None for s in sharp])
        spread = f"{np.percentile(sharp, 10):.3f} / {np.median(sharp):.3f} / {np.percentile(sharp, 90):.3f}"
        print(f"| {label} | {width:.0f} | {mae:.2f} | {mae / base:.2f} | {spread} | {kept:.0%} |")
    print(f"\nGate: set aside under {gate.MIN_FACE_PX:.0f} px or chip sharpness under {gate.MIN_SHARPNESS}")


if __name__ == "__main__":
    main()
