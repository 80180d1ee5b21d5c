"""The age interval's coverage by true age, on sharp faces and degraded copies, measured honestly:
the calibration (`ml.training.conformal`) fitted on four fifths of the validation faces (split by file name)
and measured on the fifth left out, five times over; beside it the model's own central range (as
before the calibration) and a plain normalised Mondrian conformal regressor (what PyPI `crepes`
computes: one symmetric quantile of |residual| / spread per predicted-age group).

    python bench/interval.py ../shared/data/utkface/images --weights ml/weights/resnet10x3-utkface-v2.onnx

Runs the served model (ONNX Runtime) on the validation split and its four degraded copies, each
through the whole pipeline (about 10,000 faces: minutes on two CPUs).
"""

from __future__ import annotations

import argparse
import hashlib
import platform
import time
from pathlib import Path

import numpy as np

from ml.bands import band_names, band_of
from ml.serving import quality, runtime
from ml.training import conformal
from ml.training.chips import extract
from ml.training.data import load_split, scan
from ml.training.degrade import DEGRADATIONS

FOLDS = 5


def faces_of(model: runtime.ServedAgeModel, folder: Path, workers: int) -> tuple[conformal.Faces, np.ndarray]:
    samples, _ = scan([folder])
    val = load_split(samples, [folder]).of(samples, "val")
    model.interval = None  # the model's own range and spread
    parts, names = [], []
    for kind in (conformal.SHARP, *DEGRADATIONS):
        chips = extract(val, workers=workers, desc=kind, degradation=None if kind == conformal.SHARP else kind)
        est = [e for i in range(0, len(chips), 256) for e in model.estimate(chips.chips[i : i + 256])]
        parts.append((np.array([e.age for e in est]), np.array([e.spread for e in est]),
                      quality.sharpness(chips.chips), chips.face_px, chips.ages.astype(np.float64),
                      np.full(len(chips), kind, dtype=object), np.array([e.low for e in est]),
                      np.array([e.high for e in est])))
        names.append(chips.names)
    cols = [np.concatenate([p[i] for p in parts]) for i in range(8)]
    faces = conformal.Faces(*cols[:6])
    fold = np.array([int(hashlib.sha256(n.encode()).hexdigest(), 16) % FOLDS for n in np.concatenate(names)])
    return faces, np.stack([cols[6], cols[7], fold.astype(np.float64)])


def cross_fitted(faces: conformal.Faces, fold: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    low, high = np.empty(len(fold)), np.empty(len(fold))
    for k in range(FOLDS):
        fit_on = fold != k
        part = conformal.Faces(*(getattr(faces, f)[fit_on] for f in conformal.Faces.__dataclass_fields__))
        cal = conformal.fit(part)
        out = ~fit_on
        low[out], high[out] = cal.bounds(faces.age[out], faces.spread[out], faces.sharpness[out], faces.face_px[out])
    return low, high


def symmetric_mondrian(faces: conformal.Faces, fold: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    groups = np.searchsorted(np.asarray(conformal.EDGES), faces.age, side="right")
    z = np.abs(faces.true_age - faces.age) / faces.spread
    low, high = np.empty(len(fold)), np.empty(len(fold))
    for k in range(FOLDS):
        for g in np.unique(groups):
            fit_on = np.sort(z[(fold != k) & (groups == g)])
            n = len(fit_on)
            q = fit_on[min(int(np.ceil(0.8 * (n + 1))) - 1, n - 1)] if n else 1.3
            out = (fold == k) & (groups == g)
            low[out] = faces.age[out] - q * faces.spread[out]
            high[out] = faces.age[out] + q * faces.spread[out]
    return low, high


def table(title: str, faces: conformal.Faces, low: np.ndarray, high: np.ndarray) -> None:
    covered = (faces.true_age >= low) & (faces.true_age <= high)
    bands = np.array([band_of(a) for a in faces.true_age])
    print(f"\n{title}")
    print(f"{'set':8s} {'faces':>6s} {'covers':>7s} " + " ".join(f"{b:>6s}" for b in band_names()) + "  median width")
    for kind in (conformal.SHARP, *DEGRADATIONS):
        m = faces.kind == kind
        cells = " ".join(f"{covered[m & (bands == b)].mean():6.1%}" if (m & (bands == b)).any() else "      "
                         for b in band_names())
        print(f"{kind:8s} {m.sum():6d} {covered[m].mean():7.1%} {cells}  {np.median((high - low)[m]):.1f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", type=Path)
    p.add_argument("--weights", type=Path, default=Path("ml/weights/resnet10x3-utkface-v2.onnx"))
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    print(f"{platform.processor() or platform.machine()}, {runtime.available_cpus()} CPUs; {args.weights.name}")
    t = time.perf_counter()
    model = runtime.load_age_model(args.weights)
    faces, (own_low, own_high, fold) = faces_of(model, args.folder, args.workers)
    print(f"{len(fold)} faces in {time.perf_counter() - t:.0f} s")
    table("the model's own central 80% range (before the calibration)", faces, own_low, own_high)
    table("calibrated (ml.training.conformal), cross-fitted", faces, *cross_fitted(faces, fold))
    table("symmetric normalised Mondrian by predicted age (crepes' method), cross-fitted", faces,
          *symmetric_mondrian(faces, fold))


if __name__ == "__main__":
    main()
