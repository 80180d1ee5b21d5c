"""How good a face is for reading its age: its size in the photo and the sharpness of its chip.

numpy only, for the serving path: the age interval widens for a poor face (`ml.serving.interval`), and
the gate (`ml.serving.gate`) sets a face aside as too blurred under its threshold of the same sharpness.

- Face size: the detector's box width in pixels of the photo as it was sent (before any reduction
  for detection). Below about 64 px the aligned 64 px chip is an enlargement and holds less detail.
- Sharpness: the variance of the Laplacian over the mean squared gradient, in the inner three
  quarters of the aligned gray chip. The plain variance of the Laplacian grows with contrast and with
  the chip's border; this ratio does not, so a smooth child's face is not taken for a blurred one.
  On the validation split (1,991 faces) a sharp chip's median is 1.24; Gaussian blur sigma 2 of the
  photo brings it to 0.74, a 40 px copy to 0.69 (areas under the ROC curve against the sharp
  originals 0.91 and 0.93; the plain variance of the Laplacian: 0.57 and 0.71).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

GRAY = np.array([0.299, 0.587, 0.114])
SHARP_CHIP = 1.24  # median sharpness of a sharp 64 px chip (validation split)
LARGE_FACE = 64.0  # px: a face at least this wide fills the chip without enlargement
BLURRED = "the photo is blurred"  # what is wrong with a poor face, in the words a person reads
SMALL = "the face is small"


@dataclass(frozen=True, slots=True)
class FaceQuality:
    face_px: float  # the face box's width in pixels of the photo as sent; nan when not known
    sharpness: float

    @property
    def shortfall(self) -> float:
        """0 for a sharp face of a usable size; grows with blur and with smallness (`shortfall`)."""
        return float(shortfall(np.array([self.sharpness]), np.array([self.face_px]))[0])

    @property
    def problem(self) -> str | None:
        """What is wrong with the face in a few words, or None."""
        if np.isfinite(self.face_px) and self.face_px < LARGE_FACE / 2:
            return SMALL
        if self.sharpness < SHARP_CHIP / 2:
            return BLURRED
        return None


def sharpness(chips: np.ndarray) -> np.ndarray:
    """Sharpness of each uint8 chip N x S x S x 3 (see the module's docstring); about 1.2 when sharp."""
    g = np.asarray(chips, dtype=np.float64)[..., :3] @ GRAY
    m = max(1, g.shape[1] // 8)
    c = g[:, m:-m, m:-m]
    lap = c[:, :-2, 1:-1] + c[:, 2:, 1:-1] + c[:, 1:-1, :-2] + c[:, 1:-1, 2:] - 4 * c[:, 1:-1, 1:-1]
    gx = np.diff(c, axis=2)[:, :-1]
    gy = np.diff(c, axis=1)[:, :, :-1]
    return lap.reshape(len(c), -1).var(axis=1) / ((gx**2 + gy**2).mean(axis=(1, 2)) + 1e-6)


def shortfall(sharp: np.ndarray, face_px: np.ndarray | None = None, sharp_ref: float = SHARP_CHIP,
              face_ref: float = LARGE_FACE) -> np.ndarray:
    """How far each face falls short of a good one, in log units: log(sharp_ref / sharpness) when
    below the reference, plus log(face_ref / face_px) when smaller. An unknown size (nan) counts 0."""
    blur, small = _shortfalls(sharp, face_px, sharp_ref, face_ref)
    return blur + small


def _shortfalls(sharp: np.ndarray, face_px: np.ndarray | None, sharp_ref: float,
                face_ref: float) -> tuple[np.ndarray, np.ndarray]:
    """`shortfall`'s two parts: the blur's and the smallness's."""
    s = np.maximum(np.asarray(sharp, dtype=np.float64), 1e-6)
    blur = np.maximum(0.0, np.log(sharp_ref / s))
    small = np.zeros_like(blur)
    if face_px is not None:
        w = np.asarray(face_px, dtype=np.float64)
        small = np.where(np.isfinite(w), np.maximum(0.0, np.log(face_ref / np.maximum(w, 1e-6))), 0.0)
    return blur, small


def worst(sharp: np.ndarray, face_px: np.ndarray | None = None, sharp_ref: float = SHARP_CHIP,
          face_ref: float = LARGE_FACE) -> list[str | None]:
    """For each face, the larger part of its `shortfall` in words (`BLURRED` or `SMALL`); None when it
    has none."""
    blur, small = _shortfalls(sharp, face_px, sharp_ref, face_ref)
    return [None if b == s == 0 else SMALL if s > b else BLURRED for b, s in zip(blur, small, strict=True)]


def assess(chips: np.ndarray, face_px: np.ndarray | None = None) -> list[FaceQuality]:
    """The quality of each chip, with the face widths in photo pixels when known."""
    sharp = sharpness(chips) if len(chips) else np.zeros(0)
    widths = np.full(len(sharp), np.nan) if face_px is None else np.asarray(face_px, dtype=np.float64)
    return [FaceQuality(float(w), float(s)) for w, s in zip(widths, sharp, strict=True)]
