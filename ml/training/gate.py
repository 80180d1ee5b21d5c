"""Train the gate's face classifier (ml/serving/gate.py) on the CPU: human faces against the detector's false boxes.

    .venv/bin/python -m ml.training.gate --stamps /usr/share/tuxpaint/stamps [--utkface ../shared/data/utkface]
                                         [--real-photos data/real-photos]

Human faces: UTKFace training-split faces (never validation or test), set at 20-200 px on procedural
backgrounds, some gray, found by the detector and aligned as served. Not faces: the detector's boxes,
at scores lowered to mine more of them, on Tux Paint's photo stamps (Debian `tuxpaint-stamps`: animals,
clothes, household things, food, toys; not its people) set on the same backgrounds, and on the
backgrounds alone. The twenty animals of bench/photos are left out. Logistic regression in numpy;
the weights go to ml/weights/face_gate.npz (ml/serving/gate.py reads them).

`--real-photos DIR`: human faces in real photos as well (UTKFace's are tight, mostly frontal crops: no
hair, shoulders, real light, small or turned faces), from every JPEG or PNG under DIR, decoded as
served (`ml.serving.images.load_image`). Never photos of bench/photos: DIR holds the 18F website
repository's images (18F/18f.gsa.gov, public domain / CC0 1.0: its team portraits and blog photos) less
every file bench/photos takes from it and every folder it takes one from (logos and icons left out too;
each file named by its path in that repository less `assets/`, with `/` as `__`, under DIR/18f/). A
face is one the served detector is sure of (score >= `SURE`), its chip as served; then the same photo
reduced so that those faces are 24-60 px wide, and the photo in gray, each searched again: a box there
on one of the sure faces (IoU > 0.3), whatever its score, is a face too (small and gray faces score
lower). Besides, the boxes the served detector scores under `SURE` on those photos were looked at one
by one and labelled by hand (`gate_real_labels.tsv`, `--real-labels`, in the pixels of the photo as
`load_image` decodes it: 440 human faces, many small, blurred or in profile; 89 not: drawn and cartoon
faces, smileys, a statue, hands, signs; boxes that were neither, such as half a face, left out). Their
chips are cached apart (`--real-cache`). A chip of a real photo weighs `--real-weight` (3) pasted crops or
stamp boxes within its class: those are the faces the gate must not set aside. The weights choice
(3, l2 1e-3, and the coarser gradient cells and chromaticity histogram in `gate.features`) was made on
the dev half of bench/photos only (bench/precision.py's `half`).
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

import numpy as np
from PIL import Image

from ml.paths import SPLIT_FILE
from ml.serving import gate
from ml.serving.align import FaceAligner
from ml.serving.boxes import Box
from ml.serving.faces import DetectorSettings, FaceDetector

ROOT = Path(__file__).resolve().parents[2]  # the repository
STAMP_KINDS = ("animals", "clothes", "household", "food", "hobbies", "sports", "seasonal", "medical", "town")
HELD_OUT = {
    "owl",
    "gorilla",
    "tamarin_emperor",
    "bear",
    "european-bear",
    "tiger",
    "koala",
    "rabbit-2",
    "cow_white",
    "ferret",
    "edward_bear",
    "lion-2",
    "dog",
    "fox",
    "chimp",
    "sheep_lamb",
    "goat",
    "pig_golden",
    "rabbit_little",
    "dingo",
}  # in bench/photos


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def _background(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    from bench.detection_set import TEXTURES, texture

    if rng.random() < 0.3:
        return np.full((h, w, 3), rng.integers(30, 230, 3), np.uint8)
    return texture(rng, w, h, str(rng.choice(TEXTURES)))


def mine(utkface: Path, stamps: Path, faces: int, scenes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    # looser than served, to find more of what the detector could take for a face
    loose = DetectorSettings(min_score=0.4, short_min_score=0.4, tile_min_score=0.5, yunet_min_score=0.4)
    det, aligner = FaceDetector(loose, size=1), FaceAligner()
    chips, labels = [], []
    split = csv.DictReader(SPLIT_FILE.open())
    names = [r["file"] for r in split if r["split"] == "train"]
    files = [p for k in STAMP_KINDS for p in (stamps / k).rglob("*.png") if p.stem not in HELD_OUT]
    try:
        for i in range(faces + scenes):
            w, h = int(rng.integers(320, 900)), int(rng.integers(320, 900))
            canvas = Image.fromarray(_background(rng, w, h))
            truth = None
            if i < faces:
                side = int(math.exp(rng.uniform(math.log(24), math.log(min(w, h) * 0.9))))
                crop = Image.open(utkface / "images" / names[int(rng.integers(len(names)))]).convert("RGB")
                crop = crop.resize((side, side), Image.Resampling.LANCZOS)
                if rng.random() < 0.2:
                    crop = crop.convert("L").convert("RGB")
                x, y = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
                canvas.paste(crop, (x, y))
                truth = (x + 0.1 * side, y + 0.1 * side, 0.8 * side, 0.8 * side)
            if i >= faces or rng.random() < 0.5:  # not faces beside some faces too
                for _ in range(int(rng.integers(1, 4))):
                    st = Image.open(files[int(rng.integers(len(files)))]).convert("RGBA")
                    s = rng.uniform(0.3, 1.0) * min(w / st.width, h / st.height)
                    st = st.resize((max(8, int(st.width * s)), max(8, int(st.height * s))))
                    at = (int(rng.integers(0, max(1, w - st.width))), int(rng.integers(0, max(1, h - st.height))))
                    if truth is not None and _iou((*at, st.width, st.height), truth) > 0:
                        continue  # beside the face, never over it: a covered face is no example of either
                    canvas = canvas.convert("RGBA")
                    canvas.alpha_composite(st, at)
                canvas = canvas.convert("RGB")
            rgb = np.asarray(canvas)
            for f in det.detect(rgb):
                b = (f.box.x, f.box.y, f.box.width, f.box.height)
                near = truth is not None and _iou(b, truth) > 0.3
                if truth is not None and not near and _iou(b, truth) > 0:
                    continue  # part of the face: neither
                chips.append(aligner.chip(rgb, f.box))
                labels.append(1 if near else 0)
    finally:
        det.close()
    return np.stack(chips), np.array(labels, np.float32)


SURE = 0.9  # the detector's score from which a box on a real photo is taken as a face


REAL_LABELS = Path(__file__).with_name("gate_real_labels.tsv")


def real(folder: Path, seed: int, labelled: Path | None = REAL_LABELS) -> tuple[np.ndarray, np.ndarray]:
    """Chips of the faces in the real photos under `folder` and of the boxes labelled by hand in
    `labelled`, with their labels (1: a human face); see the module's docstring."""
    from ml.serving.images import ImageError, load_image

    rng = np.random.default_rng(seed)
    det, aligner = FaceDetector(size=1), FaceAligner()
    chips, labels = [], []
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    by_hand: dict[str, list[dict[str, str]]] = {}
    if labelled is not None:
        for row in csv.DictReader(labelled.open(), delimiter="\t"):
            by_hand.setdefault(row["file"], []).append(row)
    try:
        for path in files:
            try:
                rgb = load_image(path.read_bytes()).rgb
            except ImageError:
                continue
            for row in by_hand.get(path.relative_to(folder).as_posix(), []):
                box = Box(*(float(row[k]) for k in ("x", "y", "w", "h")))
                chips.append(aligner.chip(rgb, box))
                labels.append(float(row["face"]))
            sure = [f.box for f in det.detect(rgb) if f.score >= SURE]
            if not sure:
                continue
            chips += [aligner.chip(rgb, b) for b in sure]
            labels += [1.0] * len(sure)
            truth = [(b.x, b.y, b.width, b.height) for b in sure]
            width = float(np.median([b.width for b in sure]))
            copies = [(np.asarray(Image.fromarray(rgb).convert("L").convert("RGB")), 1.0)]
            for _ in range(2):
                s = rng.uniform(24, 60) / width
                if s < 0.9:
                    h, w = max(8, round(rgb.shape[0] * s)), max(8, round(rgb.shape[1] * s))
                    small = Image.fromarray(rgb).resize((w, h), Image.Resampling.LANCZOS)
                    if rng.random() < 0.2:
                        small = small.convert("L").convert("RGB")
                    copies.append((np.asarray(small), s))
            for img, s in copies:
                for f in det.detect(img):
                    b = (f.box.x / s, f.box.y / s, f.box.width / s, f.box.height / s)
                    if any(_iou(b, t) > 0.3 for t in truth):
                        chips.append(aligner.chip(img, f.box))
                        labels.append(1.0)
    finally:
        det.close()
    return np.stack(chips), np.array(labels, np.float32)


def fit(
    x: np.ndarray, y: np.ndarray, l2: float = 1e-3, steps: int = 3000, sample: np.ndarray | None = None
) -> tuple[np.ndarray, float]:
    """Logistic regression by gradient descent, classes weighted equally; `sample`: each row's weight
    within its class (a real photo's face counts more than a pasted UTKFace crop)."""
    w, b = np.zeros(x.shape[1], np.float64), 0.0
    if sample is None:
        weight = np.where(y == 1, 0.5 / y.mean(), 0.5 / (1 - y.mean()))
    else:
        share = np.average(y == 1, weights=sample)
        weight = np.where(y == 1, 0.5 / share, 0.5 / np.average(y == 0, weights=sample)) * sample / sample.mean()
    lr = 0.5
    for _ in range(steps):
        p = 1 / (1 + np.exp(-(x @ w + b)))
        g = (p - y) * weight / len(y)
        w -= lr * (x.T @ g + l2 * w)
        b -= lr * g.sum()
    return w.astype(np.float32), float(b)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--utkface", type=Path, default=ROOT.parent / "shared" / "data" / "utkface")
    ap.add_argument("--stamps", type=Path, default=Path("/usr/share/tuxpaint/stamps"))
    ap.add_argument("--faces", type=int, default=1500)
    ap.add_argument("--scenes", type=int, default=2500)
    ap.add_argument("--seed", type=int, default=22)
    ap.add_argument("--out", type=Path, default=gate.CLASSIFIER)
    ap.add_argument("--cache", type=Path, default=ROOT / "data" / "gate-chips.npz")
    ap.add_argument("--real-photos", type=Path, help="a folder of real photos of people (not bench/photos)")
    ap.add_argument("--real-labels", type=Path, default=REAL_LABELS, help="boxes on those photos labelled by hand")
    ap.add_argument("--real-cache", type=Path, default=ROOT / "data" / "gate-real-chips.npz")
    ap.add_argument("--real-weight", type=float, default=3.0, help="a real photo's chip against a pasted crop")
    ap.add_argument("--l2", type=float, default=1e-3)
    args = ap.parse_args()
    if args.cache.exists():
        d = np.load(args.cache)
        chips, labels = d["chips"], d["labels"]
    else:
        chips, labels = mine(args.utkface, args.stamps, args.faces, args.scenes, args.seed)
        args.cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(args.cache, chips=chips, labels=labels)
    if args.real_photos is not None:
        if args.real_cache.exists():
            d = np.load(args.real_cache)
            more, more_labels = d["chips"], d["labels"]
        else:
            more, more_labels = real(args.real_photos, args.seed, args.real_labels)
            args.real_cache.parent.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(args.real_cache, chips=more, labels=more_labels)
        print(f"real photos: {int(more_labels.sum())} faces, {int((1 - more_labels).sum())} not faces")
        sample = np.concatenate([np.ones(len(chips)), np.full(len(more), args.real_weight)])
        chips, labels = np.concatenate([chips, more]), np.concatenate([labels, more_labels])
    else:
        sample = np.ones(len(chips))
    print(f"chips: {int(labels.sum())} faces, {int((1 - labels).sum())} not faces")
    x, y = augmented(chips, labels, np.random.default_rng(args.seed))
    rng = np.random.default_rng(args.seed + 1)
    held = rng.random(len(chips)) < 0.2  # a fifth to check on, before fitting on all
    xh, yh = augmented(chips[held], labels[held], rng)
    xt, yt = augmented(chips[~held], labels[~held], rng)
    mean, scale = xt.mean(0), xt.std(0) + 1e-6
    w, b = fit((xt - mean) / scale, yt, args.l2, sample=np.repeat(sample[~held], 3))
    p = 1 / (1 + np.exp(-(((xh - mean) / scale) @ w + b)))
    face = yh == 1
    print(
        f"held-out fifth (with its flipped and blurred copies): faces over {gate.MIN_FACE_PROB} "
        f"{np.mean(p[face] >= gate.MIN_FACE_PROB):.1%}, not faces under {np.mean(p[~face] < gate.MIN_FACE_PROB):.1%}"
    )
    mean, scale = x.mean(0), x.std(0) + 1e-6
    w, b = fit((x - mean) / scale, y, args.l2, sample=np.repeat(sample, 3))
    np.savez(args.out, mean=mean.astype(np.float32), scale=scale.astype(np.float32), weights=w, bias=np.float32(b))
    print(f"wrote {args.out}")


def augmented(chips: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Features of each chip, its mirror image and a slightly blurred copy (sigma 0.3-1.2 chip pixels,
    about blur 1-2% of the face's width, which bench/face_quality.py finds still worth an age): neither
    the side a face turns to nor a little blur should make it less of a face."""
    from PIL import ImageFilter

    feats, ys = [], []
    for c, y in zip(chips, labels, strict=True):
        blurred = np.asarray(Image.fromarray(c).filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2))))
        for v in (c, c[:, ::-1], blurred):
            feats.append(gate.features(np.ascontiguousarray(v)))
            ys.append(y)
    return np.stack(feats).astype(np.float64), np.array(ys, np.float32)


if __name__ == "__main__":
    main()
