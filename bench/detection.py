"""Face detection: share of faces found and false faces, for detector variants side by side.

    .venv/bin/python bench/detection.py [--faces ../shared/data/faces] [--utkface ../shared/data/utkface/images]

Two sets: uncropped photos with counted faces (`manifest.tsv`: group photos, portraits, photos
without people) and a sample of UTKFace crops, where the face fills the frame as in a selfie.
A photo that is not JPEG/PNG/WebP (the GIF) is read with Pillow directly for this measurement.
"""

from __future__ import annotations

import argparse
import csv
import random
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

# Import from the repository root, not bench/ (whose http.py would shadow the standard `http`).
sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench.machine import describe  # noqa: E402
from ml.faces import DetectorSettings, FaceDetector  # noqa: E402
from ml.images import ImageError, load_image  # noqa: E402

OFF = 2.0  # a score no detection reaches: turns a model off

VARIANTS = {
    "short-range only": DetectorSettings(min_score=OFF, tile_min_score=OFF),
    "full-range only": DetectorSettings(short_min_score=OFF, tile_min_score=OFF),
    "full-range + tiles": DetectorSettings(short_min_score=OFF),
    "short + full": DetectorSettings(tile_min_score=OFF),
    "short + full + tiles (served)": DetectorSettings(),
}


def load_rgb(path: Path) -> np.ndarray:
    try:
        return load_image(path.read_bytes()).rgb
    except ImageError:
        return np.ascontiguousarray(np.asarray(Image.open(path).convert("RGB")))


def main() -> None:
    root = Path(__file__).resolve().parent.parent
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", type=Path, default=root.parent / "shared" / "data" / "faces")
    parser.add_argument("--utkface", type=Path, default=root.parent / "shared" / "data" / "utkface" / "images")
    parser.add_argument("--utkface-sample", type=int, default=500)
    args = parser.parse_args()
    print(describe())

    rows = list(csv.DictReader((args.faces / "manifest.tsv").open(), delimiter="\t"))
    photos = [(r["file"], r["expected_faces"], load_rgb(args.faces / r["file"])) for r in rows]
    crops = sorted(args.utkface.glob("*.jpg"))
    random.Random(0).shuffle(crops)
    crops = [load_rgb(p) for p in crops[: args.utkface_sample]]

    print(f"{'variant':32} {'faces found':>14} {'false faces':>12} {'  on photos without people':>10}"
          f" {'UTKFace crops found':>20} {'median ms/photo':>16}")
    for name, settings in VARIANTS.items():
        det = FaceDetector(replace(settings), size=1)
        counted = found = false_noface = extra = 0
        times = []
        detail = []
        for file, expected, rgb in photos:
            t = time.perf_counter()
            n = len(det.detect(rgb))
            times.append(time.perf_counter() - t)
            if expected == "art":
                continue
            e = int(expected.lstrip("~"))
            counted += e
            found += min(n, e)
            extra += max(0, n - e)
            if e == 0:
                false_noface += n
            detail.append(f"{file}:{n}/{e}")
        utk = sum(1 for rgb in crops if det.detect(rgb))
        det.close()
        noface = sum(1 for _, e, _ in photos if e == "0")
        print(f"{name:32} {found:>4}/{counted} {found / counted:6.1%} {extra:>12} {false_noface:>6} on {noface:<3}"
              f" {utk:>8}/{len(crops)} {utk / len(crops):6.1%} {np.median(times) * 1000:>16.1f}")
        if name.endswith("(served)"):
            print("  per photo (found/expected): " + " ".join(detail))


if __name__ == "__main__":
    main()
