"""Face chips aligned on landmarks, as the age network was trained on them.

The chip is dlib's: its 5-point shape predictor (CC0 model file) finds eye corners and the base
of the nose inside the detector's box, and `get_face_chip_details(shape, size, padding)` maps
them onto a fixed template. A plain crop of the box is not usable: the estimate moves by 15-20
years when the crop's padding changes by 10% (ml-notes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ml.paths import WEIGHTS_DIR
from ml.serving.boxes import Box

SHAPE_PREDICTOR = WEIGHTS_DIR / "shape_predictor_5_face_landmarks.dat"
CHIP_SIZE = 64
CHIP_PADDING = 0.2


class FaceAligner:
    """Landmarks and chips; dlib's predictor is read-only after loading, so one serves all threads."""

    def __init__(self, model_path: Path = SHAPE_PREDICTOR) -> None:
        import dlib  # here, not at the top: training on a machine without dlib needs none of this

        self._dlib = dlib
        self._predictor = dlib.shape_predictor(str(model_path))

    def landmarks(self, rgb: np.ndarray, box: Box) -> Any:
        """dlib's 5 landmarks (a `full_object_detection`) of the face in `box`."""
        dlib = self._dlib
        rect = dlib.rectangle(
            int(round(box.x)), int(round(box.y)),
            int(round(box.x + box.width)) - 1, int(round(box.y + box.height)) - 1,
        )
        return self._predictor(rgb, rect)

    def chip(self, rgb: np.ndarray, box: Box, size: int = CHIP_SIZE, padding: float = CHIP_PADDING) -> np.ndarray:
        """An aligned size x size x 3 uint8 chip of the face in `box`."""
        shape = self.landmarks(rgb, box)
        details = self._dlib.get_face_chip_details(shape, size, padding)
        return np.asarray(self._dlib.extract_image_chip(rgb, details))

    def chips(self, rgb: np.ndarray, boxes: list[Box], size: int = CHIP_SIZE,
              padding: float = CHIP_PADDING) -> np.ndarray:
        out = np.empty((len(boxes), size, size, 3), dtype=np.uint8)
        for i, box in enumerate(boxes):
            out[i] = self.chip(rgb, box, size, padding)
        return out
