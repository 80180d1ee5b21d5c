"""Which detected faces are worth an age: a quality score and, for a face set aside, the reason.

A detector box earns an age only when the age step can read it (measured by bench/face_quality.py on
UTKFace validation faces made small or blurred):
- `too_small`: the face's box is under `MIN_FACE_PX` pixels wide in the uploaded photo;
- `too_blurred`: the aligned chip's sharpness is under `MIN_SHARPNESS`: the measure of
  `ml.serving.quality`, the one the age interval widens by, so that "blurred" means one thing;
- `not_a_face`: the face classifier (`FaceClassifier`, logistic regression on small features of the
  aligned chip, trained on human faces, pasted UTKFace crops and faces in real photos, against animal
  faces, clothing, drawn faces and the detector's false boxes)
  gives a human face a probability under `MIN_FACE_PROB`, and the detector itself is unsure of the
  box (score under `SURE_SCORE`). The classifier alone would also set aside faces turned away from
  the camera (UTKFace, its human faces, is mostly frontal): on bench/photos the classifier before its
  refit with real photos gave 12 of 56 faces, most of them profiles, under 0.5, all of them scored 0.85
  or more by the detector, while the animals and things the detector took for faces scored 0.55-0.77
  (the monkey 0.89).
Numpy only: the serving path loads nothing else for this.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ml.paths import WEIGHTS_DIR
from ml.serving import quality

CLASSIFIER = WEIGHTS_DIR / "face_gate.npz"

MIN_FACE_PX = 18.0  # 20 px: error 1.39x a sharp face's; 16 px 1.73x; 12 px 2.19x
# quality.sharpness: blur 2% of the width: error 1.27x, chips 0.30-0.48 (p10-p90); blur 4%: 2.14x,
# chips 0.11-0.19; the threshold halfway between on a log scale (bench/face_quality.py)
MIN_SHARPNESS = 0.24
MIN_FACE_PROB = 0.5
SURE_SCORE = 0.8  # the detector's score from which the classifier cannot veto a box
REASONS = ("not_a_face", "too_blurred", "too_small")


@dataclass(frozen=True, slots=True)
class Verdict:
    quality: float  # 0-1: the weakest of size, sharpness and face probability, each scaled to its threshold
    reason: str | None  # None: worth an age


def _gray(chip: np.ndarray) -> np.ndarray:
    return chip.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32) / 255.0


def _detail(chip: np.ndarray) -> float:
    """One of the classifier's features (it was fitted with it), not a verdict: detail left in the
    middle of an aligned chip, the spread of its Laplacian against the spread of its gray levels."""
    g = _gray(chip)
    n = g.shape[0]
    m = g[n // 5 : n - n // 5, n // 5 : n - n // 5]  # the face, not the padding around it
    lap = 4 * m[1:-1, 1:-1] - m[:-2, 1:-1] - m[2:, 1:-1] - m[1:-1, :-2] - m[1:-1, 2:]
    return float(lap.std() / (m.std() + 0.02))


def judge(width: float, sharp: float, face_prob: float = 1.0, score: float = 0.0) -> Verdict:
    """The verdict on a face whose box is `width` px wide where its chip is cut from, `score` the detector's."""
    terms = {
        "too_small": width / (2 * MIN_FACE_PX),
        "too_blurred": sharp / (2 * MIN_SHARPNESS),
        "not_a_face": face_prob,
    }
    quality = float(np.clip(min(terms.values()), 0.0, 1.0))
    # measured reasons first: a blurred or tiny face also looks less like a face to the classifier
    if width < MIN_FACE_PX:
        return Verdict(quality, "too_small")
    if sharp < MIN_SHARPNESS:
        return Verdict(quality, "too_blurred")
    if face_prob < MIN_FACE_PROB and score < SURE_SCORE:
        return Verdict(quality, "not_a_face")
    return Verdict(quality, None)


def features(chip: np.ndarray) -> np.ndarray:
    """Small features of an aligned 64x64 chip: histograms of gradient directions in 8x8 cells (the
    shape of eyes, nose and mouth where the alignment puts them) and in 4x4 coarser cells (the outline
    of head and hair, which holds for small, blurred and turned faces), the colour of the middle (skin
    against fur) with a 4x4 histogram of its chromaticity, and the detail left in it."""
    g = _gray(chip)
    gy, gx = np.gradient(g)
    mag = np.hypot(gx, gy)
    ang = (np.arctan2(gy, gx) % np.pi) / np.pi * 9  # 9 unsigned directions
    bins = np.minimum(ang.astype(np.int32), 8)
    rgb = chip[16:48, 16:48].reshape(-1, 3).astype(np.float32) + 1.0
    chroma = rgb / rgb.sum(axis=1, keepdims=True)
    colour = np.concatenate([chroma.mean(0)[:2], chroma.std(0)[:2], [g[16:48, 16:48].std()]])
    wide = chip[12:52, 12:52].reshape(-1, 3).astype(np.float32) + 1.0
    wide /= wide.sum(axis=1, keepdims=True)
    skin, _, _ = np.histogram2d(wide[:, 0], wide[:, 1], bins=4, range=[[0.2, 0.6], [0.2, 0.45]])
    return np.concatenate(
        [_cells(mag, bins, 8), colour, [_detail(chip)], _cells(mag, bins, 4), skin.ravel() / len(wide)]
    ).astype(np.float32)


def _cells(mag: np.ndarray, bins: np.ndarray, cells: int) -> np.ndarray:
    """Gradient magnitude by direction in `cells` x `cells` cells, each cell's histogram normalised."""
    n = mag.shape[0] // cells
    idx = np.minimum(np.arange(mag.shape[0]) // n, cells - 1)
    cell = idx[:, None] * cells + idx[None, :]
    hist = np.bincount((cell * 9 + bins).ravel(), mag.ravel(), minlength=cells * cells * 9).reshape(cells, cells, 9)
    hist = hist.astype(np.float32)
    return (hist / (np.linalg.norm(hist, axis=2, keepdims=True) + 0.05)).ravel()


class FaceClassifier:
    """Probability that an aligned chip shows a human face (logistic regression on `features`)."""

    def __init__(self, path: Path = CLASSIFIER) -> None:
        w = np.load(path)
        self.mean, self.scale, self.weights, self.bias = w["mean"], w["scale"], w["weights"], float(w["bias"])

    def prob(self, chips: np.ndarray) -> np.ndarray:
        if len(chips) == 0:
            return np.zeros(0, np.float32)
        x = (np.stack([features(c) for c in chips]) - self.mean) / self.scale
        return 1.0 / (1.0 + np.exp(-(x @ self.weights + self.bias)))


class FaceGate:
    """The verdict on each face of a photo, from the chips the age step reads."""

    def __init__(self, classifier: FaceClassifier | None = None) -> None:
        self.classifier = classifier if classifier is not None else FaceClassifier()

    def judge(self, widths: list[float], scores: list[float], chips: np.ndarray) -> list[Verdict]:
        """`widths`: each face's box size (the shorter side) in the pixels its chip was cut from;
        `scores`: the detector's."""
        probs = self.classifier.prob(chips)
        sharp = quality.sharpness(chips) if len(chips) else np.zeros(0)
        return [judge(w, float(q), float(p), s) for w, s, q, p in zip(widths, scores, sharp, probs, strict=True)]
