"""Alignment choice: dlib's 5-point landmarks versus MediaPipe's own keypoints, by age MAE.

    .venv/bin/python -m bench.alignment [--utkface ../shared/data/utkface/images] [--weights W]

Both start from the served detector's box on each image of the validation split. "dlib 5-point"
is the served chip. "MediaPipe keypoints" warps the detector's eyes, nose tip and mouth onto a
template by a least-squares similarity transform; the template is where those keypoints land, on
average, in dlib's chips of 3,000 training-split images (so both chips frame the face alike).
Each is measured with and without averaging over the mirrored chip.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import dlib
import numpy as np
from tqdm import tqdm

from bench.machine import describe
from ml.bands import band_names, band_of
from ml.paths import DEFAULT_AGE_WEIGHTS
from ml.serving.align import CHIP_PADDING, CHIP_SIZE, FaceAligner
from ml.serving.faces import FaceDetector
from ml.serving.images import load_image
from ml.training.data import load_split, scan
from ml.training.evaluate import load_model

KEYPOINTS = 4  # right eye, left eye, nose tip, mouth; the ear points move with the head's turn


def chip_to_image(details: dlib.chip_details) -> np.ndarray:
    """2x3 affine map from chip pixels to image pixels, as dlib samples them."""
    r = details.rect
    cx, cy = (r.left() + r.right()) / 2, (r.top() + r.bottom()) / 2
    s = (r.width() - 1) / (details.cols - 1)
    th = details.angle
    rot = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]]) * s
    t = np.array([cx, cy]) - rot @ np.array([(details.cols - 1) / 2, (details.rows - 1) / 2])
    return np.hstack([rot, t[:, None]])


def keypoints(face) -> np.ndarray:
    return np.array([[p.x, p.y] for p in face.keypoints[:KEYPOINTS]], dtype=np.float64)


def learn_template(paths: list[Path], detector: FaceDetector, aligner: FaceAligner) -> np.ndarray:
    points = []
    for path in tqdm(paths, desc="template"):
        rgb = load_image(path.read_bytes()).rgb
        faces = detector.detect(rgb)
        if not faces:
            continue
        details = dlib.get_face_chip_details(aligner.landmarks(rgb, faces[0].box), CHIP_SIZE, CHIP_PADDING)
        m = np.vstack([chip_to_image(details), [0, 0, 1]])
        kp = keypoints(faces[0])
        points.append((np.linalg.inv(m) @ np.hstack([kp, np.ones((len(kp), 1))]).T)[:2].T)
    return np.mean(points, axis=0)


def keypoint_chip(rgb: np.ndarray, face, template: np.ndarray) -> np.ndarray:
    m, _ = cv2.estimateAffinePartial2D(keypoints(face).astype(np.float32), template.astype(np.float32),
                                       method=cv2.LMEDS)
    return cv2.warpAffine(rgb, m, (CHIP_SIZE, CHIP_SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def main() -> None:
    root = Path(__file__).resolve().parent.parent
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--utkface", type=Path, default=root.parent / "shared" / "data" / "utkface" / "images")
    parser.add_argument("--weights", type=Path, default=DEFAULT_AGE_WEIGHTS)
    args = parser.parse_args()
    print(describe())

    samples, _ = scan([args.utkface])
    split = load_split(samples, [args.utkface])
    train, val = split.of(samples, "train"), split.of(samples, "val")
    rng = np.random.default_rng(0)
    detector, aligner = FaceDetector(size=1), FaceAligner()
    template = learn_template([train[i].path for i in rng.choice(len(train), 3000, replace=False)], detector, aligner)
    print("template (x, y in the 64 px chip):", np.round(template, 2).tolist())

    chips = {"dlib 5-point": [], "MediaPipe keypoints": []}
    ages, times = [], {k: [] for k in chips}
    for s in tqdm(val, desc="validation"):
        rgb = load_image(s.path.read_bytes()).rgb
        faces = detector.detect(rgb)
        if not faces:
            continue
        t = time.perf_counter()
        chips["dlib 5-point"].append(aligner.chip(rgb, faces[0].box))
        times["dlib 5-point"].append(time.perf_counter() - t)
        t = time.perf_counter()
        chips["MediaPipe keypoints"].append(keypoint_chip(rgb, faces[0], template))
        times["MediaPipe keypoints"].append(time.perf_counter() - t)
        ages.append(s.age)
    detector.close()
    ages_np = np.array(ages, dtype=np.float64)
    bands = np.array([band_of(a) for a in ages_np])

    model = load_model(args.weights)
    print(f"\nage model {model.version}, {len(ages)} validation faces (found by the served detector)")
    header = f"{'alignment':22} {'mirror':>6} {'MAE':>6} {'ms/face':>8} " + " ".join(f"{b:>6}" for b in band_names())
    print(header)
    for name, c in chips.items():
        arr = np.stack(c)
        for mirror in (False, True):
            model.mirror = mirror
            pred = np.array([d.age for d in model.estimate(arr)])
            err = np.abs(pred - ages_np)
            by_band = " ".join(f"{err[bands == b].mean():6.2f}" for b in band_names())
            print(f"{name:22} {'yes' if mirror else 'no':>6} {err.mean():6.2f} {np.median(times[name]) * 1000:8.2f} "
                  + by_band)


if __name__ == "__main__":
    main()
