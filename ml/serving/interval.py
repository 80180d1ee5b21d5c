"""The calibrated age interval: the one place that decides a face's range when its model carries a
calibration (numpy only, for the serving path; fitted by `ml.training.conformal`).

A model's own 80% range (the central range of its age distribution) covers 80% of faces overall but
not of every age: children 92%, teenagers 64%, people over 40 68-77% on validation, and it does not
widen for a poor photo. The calibrated range is split conformal prediction, group-conditional
("Mondrian") and asymmetric:

    low  = age + lower[cell] x spread        high = age + upper[cell] x spread

`spread` is the standard deviation of the model's age distribution (wider where the model is
unsure); `cell` is the predicted age's group (`edges`) crossed with the face's quality (good, or
poor when `ml.serving.quality.shortfall` exceeds `poor_from`: blurred or small). `lower` and `upper` are
quantiles of (true - predicted) / spread of the calibration faces in that cell, at levels chosen so
that every true-age group, sharp and degraded, is covered about as often as promised (teenagers are
predicted as people in their twenties, so the cells of faces predicted 20-34 reach lower; faces
predicted 55+ reach higher).

A poor face's range carries a note saying why it is wider ("the photo is blurred", `range_notes`), only
where the poor cell's quantiles make it wider, by at least `NOTE_FROM` years, than a good face's with the
same estimate and spread: in some groups the poor cell is no wider (the spread, which also grows on a
poor photo, already holds the doubt), and a note there would give a reason for nothing.

The calibration travels as JSON in the exported model's metadata (`interval_calibration`); a model
without it keeps the central range of its distribution (`ml.serving.runtime.summarise`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np

from ml.serving import quality

METADATA_KEY = "interval_calibration"
METHOD = "mondrian-conformal-v1"
NOTE_FROM = 1.0  # years the face's quality must add to its range for the range to say why (shown in whole years)


@dataclass(frozen=True)
class IntervalCalibration:
    coverage: float  # the promised share of true ages inside the range
    edges: list[float]  # predicted-age group boundaries, years
    poor_from: float  # quality shortfall above which a face is poor
    sharp_ref: float  # `ml.serving.quality.shortfall`'s references, as calibrated
    face_ref: float
    lower: list[float]  # per cell (group x 2 + poor), in spreads
    upper: list[float]
    method: str = METHOD
    fitted_on: str = ""  # what the quantiles were computed on, for the record

    def cells(self, ages: np.ndarray, shortfall: np.ndarray) -> np.ndarray:
        groups = np.searchsorted(np.asarray(self.edges, dtype=np.float64), ages, side="right")
        return groups * 2 + (np.asarray(shortfall) > self.poor_from)

    def bounds(self, ages: np.ndarray, spreads: np.ndarray, sharpness: np.ndarray,
               face_px: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Low and high end of each face's range (they always hold the age itself)."""
        a = np.asarray(ages, dtype=np.float64)
        s = np.asarray(spreads, dtype=np.float64)
        short = quality.shortfall(sharpness, face_px, self.sharp_ref, self.face_ref)
        return self._bounds(a, s, self.cells(a, short))

    def _bounds(self, ages: np.ndarray, spreads: np.ndarray, cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        low = ages + np.asarray(self.lower)[cells] * spreads
        high = ages + np.asarray(self.upper)[cells] * spreads
        return np.maximum(0.0, np.minimum(low, ages)), np.maximum(high, ages)

    def range_notes(self, ages: np.ndarray, spreads: np.ndarray, sharpness: np.ndarray,
                    face_px: np.ndarray | None = None) -> list[str | None]:
        """For each face, why its range is wider (`ml.serving.quality.worst`'s words) when its quality made
        it wider (see the module's docstring); None otherwise."""
        a = np.asarray(ages, dtype=np.float64)
        s = np.asarray(spreads, dtype=np.float64)
        short = quality.shortfall(sharpness, face_px, self.sharp_ref, self.face_ref)
        cells = self.cells(a, short)
        low, high = self._bounds(a, s, cells)
        good_low, good_high = self._bounds(a, s, cells - cells % 2)  # the same group, good quality
        widened = (high - low) - (good_high - good_low) >= NOTE_FROM
        words = quality.worst(sharpness, face_px, self.sharp_ref, self.face_ref)
        return [w if wide else None for w, wide in zip(words, widened, strict=True)]

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> IntervalCalibration:
        d = json.loads(text)
        if d.get("method") != METHOD:
            raise ValueError(f"unknown interval calibration {d.get('method')!r}")
        return cls(**d)


def from_metadata(meta: dict[str, str]) -> IntervalCalibration | None:
    """The calibration a model's metadata carries, or None (older models)."""
    text = meta.get(METADATA_KEY)
    return IntervalCalibration.from_json(text) if text else None
