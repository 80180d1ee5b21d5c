"""How often the age range says why it is wider (`range_note`, `ml.serving.interval.range_notes`): the
share of validation faces given a note, sharp and on each degraded copy, overall and by predicted age.

    python bench/range_note.py ../shared/data/utkface/images --limit 400

Runs the served model (ONNX Runtime, with its calibration) on every n-th validation face so that
`--limit` faces are read, each through the whole pipeline (detection, alignment), sharp and degraded.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections import Counter
from pathlib import Path

import numpy as np

from ml.paths import DEFAULT_AGE_WEIGHTS
from ml.serving import quality, runtime
from ml.training import conformal
from ml.training.chips import extract
from ml.training.data import load_split, scan
from ml.training.degrade import DEGRADATIONS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--weights", type=Path, default=DEFAULT_AGE_WEIGHTS)
    ap.add_argument("--limit", type=int, default=400, help="validation faces read (every n-th)")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()

    model = runtime.load_age_model(args.weights)
    cal = model.interval
    assert cal is not None, f"{args.weights} carries no interval calibration"
    samples, _ = scan([args.folder])
    val = load_split(samples, [args.folder]).of(samples, "val")
    val = val[:: max(1, len(val) // args.limit)][: args.limit]
    edges = [0, *cal.edges]
    names = [f"{lo:g}-{hi:g}" for lo, hi in zip(edges, [*cal.edges, np.inf], strict=True)]
    print(
        f"{args.weights.name}, {len(val)} validation faces; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, python {platform.python_version()}"
    )
    print(
        f"{'copy':8} {'faces':>5} {'poor':>5} {'noted':>5}  words; noted / poor by predicted age ({', '.join(names)})"
    )
    started = time.perf_counter()
    for kind in (conformal.SHARP, *DEGRADATIONS):
        chips = extract(val, workers=args.workers, desc=kind, degradation=None if kind == conformal.SHARP else kind)
        est = [
            e
            for i in range(0, len(chips), 256)
            for e in model.estimate(chips.chips[i : i + 256], cal.coverage, chips.face_px[i : i + 256])
        ]
        ages = np.array([e.age for e in est])
        notes = [e.range_note for e in est]
        short = quality.shortfall(quality.sharpness(chips.chips), chips.face_px, cal.sharp_ref, cal.face_ref)
        poor = short > cal.poor_from
        noted = np.array([n is not None for n in notes])
        group = np.searchsorted(np.asarray(cal.edges), ages, side="right")
        by_group = " ".join(f"{noted[group == g].sum()}/{poor[group == g].sum()}" for g in range(len(names)))
        words = dict(Counter(n for n in notes if n))
        print(f"{kind:8} {len(est):5d} {poor.sum():5d} {noted.sum():5d}  {words}; {by_group}")
    print(f"{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
