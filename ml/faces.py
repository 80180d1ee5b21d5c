"""Face detection with MediaPipe's BlazeFace models: short-range, full-range, and tiles.

- The short-range model (128x128 input) finds faces that fill much of the frame: selfies and
  close-up crops, where the full-range model misses half of them (measured on UTKFace crops:
  short-range 99%, full-range 45%).
- The full-range model (192x192 input) finds faces down to about 1/15 of the frame.
- On images of at least `tile_from` pixels on the long side, the full-range model also looks at
  2x2 overlapping tiles, for the small faces at the back of a group photo, unless the whole image
  already showed a face a quarter of its height or more (a portrait: tiles would take four
  times the detector's time for faces in the background). Faces found only in a tile need a
  stricter score: tiles give the detector more chances to see a face in a pattern.
Detections of one face are merged by overlap. The short-range model's box stands for a face it
found (it is the better judge of a large face, and one model's boxes are consistent with each
other), then the full-range model's on the whole image, then the tiles'.
"""

from __future__ import annotations

import os
import queue
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

WEIGHTS_DIR = Path(__file__).parent / "weights"
FULL_RANGE_MODEL = WEIGHTS_DIR / "face_detection_full_range_sparse.tflite"
SHORT_RANGE_MODEL = WEIGHTS_DIR / "face_detection_short_range.tflite"

# MediaPipe's C++ side logs to stderr through glog and TFLite; keep it to errors.
os.environ.setdefault("GLOG_minloglevel", "2")


@dataclass(frozen=True, slots=True)
class Point:
    x: float
    y: float


@dataclass(frozen=True, slots=True)
class Box:
    """A face's box in pixels of the upright image: top-left corner and size."""

    x: float
    y: float
    width: float
    height: float

    @property
    def area(self) -> float:
        return self.width * self.height

    def scaled(self, factor: float) -> Box:
        return Box(self.x * factor, self.y * factor, self.width * factor, self.height * factor)


@dataclass(frozen=True, slots=True)
class Face:
    """One detected face. Keypoints: right eye, left eye, nose tip, mouth, right ear, left ear
    (the person's right and left), in pixels of the upright image."""

    box: Box
    score: float
    keypoints: tuple[Point, ...]

    def scaled(self, factor: float) -> Face:
        return Face(self.box.scaled(factor), self.score,
                    tuple(Point(p.x * factor, p.y * factor) for p in self.keypoints))


@dataclass(frozen=True, slots=True)
class DetectorSettings:
    min_score: float = 0.55  # full-range model on the whole image
    short_min_score: float = 0.55  # short-range model on the whole image (0.5 takes a dog for a face)
    tile_min_score: float = 0.65  # full-range model on tiles
    tile_from: int = 800  # long side in pixels from which tiles are also searched
    tile_overlap: float = 0.25
    portrait_face: float = 0.25  # no tiles once a face this share of the short side is found
    merge_overlap: float = 0.4  # intersection over the smaller box above which two boxes are one face
    min_face: float = 12.0  # pixels; smaller boxes are too small to say anything about

    @classmethod
    def v1(cls) -> DetectorSettings:
        """The detector as served until December 2026, kept for side-by-side measurements."""
        return cls(min_score=0.55, short_min_score=0.55, tile_min_score=0.65, tile_from=800, tile_overlap=0.25,
                   portrait_face=0.25, merge_overlap=0.4, min_face=12.0)


def _mediapipe() -> Any:
    """`mediapipe`, imported without its drawing helpers' matplotlib and OpenCV (about 0.4 s and 55 MB
    of a server's memory; detection uses neither): stand-ins sit in `sys.modules` only while it
    imports, so a later `import matplotlib` or `import cv2` gets the real module."""
    if "mediapipe.tasks.python.vision" not in sys.modules:
        stand_ins = [n for n in ("matplotlib", "matplotlib.pyplot", "cv2") if n not in sys.modules]
        for name in stand_ins:
            sys.modules[name] = types.ModuleType(name)
        try:
            import mediapipe.tasks.python.vision  # noqa: F401
        finally:
            for name in stand_ins:
                sys.modules.pop(name, None)
    import mediapipe

    return mediapipe


def _create(model_path: Path, min_score: float) -> object:
    _mediapipe()
    from mediapipe.tasks.python import BaseOptions, vision

    options = vision.FaceDetectorOptions(
        base_options=BaseOptions(model_asset_path=str(model_path)), min_detection_confidence=min_score)
    return vision.FaceDetector.create_from_options(options)


class FaceDetector:
    """A pool of MediaPipe graph pairs (short-range, full-range): one graph is not safe to call
    from two threads at once, so each call borrows a pair for its duration. `size` bounds how many
    detections run in parallel."""

    def __init__(self, settings: DetectorSettings | None = None, size: int = 2) -> None:
        s = self.settings = settings or DetectorSettings()
        self._all = [
            (_create(SHORT_RANGE_MODEL, s.short_min_score),
             _create(FULL_RANGE_MODEL, min(s.min_score, s.tile_min_score)))
            for _ in range(max(1, size))
        ]
        self._free: queue.SimpleQueue = queue.SimpleQueue()
        for pair in self._all:
            self._free.put(pair)

    @contextmanager
    def _borrow(self) -> Iterator[tuple[object, object]]:
        pair = self._free.get()
        try:
            yield pair
        finally:
            self._free.put(pair)

    def close(self) -> None:
        for short, full in self._all:
            short.close()  # type: ignore[attr-defined]
            full.close()  # type: ignore[attr-defined]
        self._all = []

    def detect(self, rgb: np.ndarray) -> list[Face]:
        """All faces in an RGB uint8 image, largest first, in that image's pixels."""
        s = self.settings
        h, w = rgb.shape[:2]
        with self._borrow() as (short, full):
            by_priority = [
                [f for f in _run(short, rgb, 0, 0) if f.score >= s.short_min_score],
                [f for f in _run(full, rgb, 0, 0) if f.score >= s.min_score],
            ]
            largest = max((f.box.height for found in by_priority for f in found), default=0.0)
            if max(h, w) >= s.tile_from and largest < s.portrait_face * min(h, w):
                tiles = []
                for x0, y0, x1, y1 in _tiles(w, h, s.tile_overlap):
                    tile = np.ascontiguousarray(rgb[y0:y1, x0:x1])
                    tiles += [f for f in _run(full, tile, x0, y0) if f.score >= s.tile_min_score]
                by_priority.append(tiles)
        faces = _merge(by_priority, s.merge_overlap)
        faces = [f for f in faces if min(f.box.width, f.box.height) >= s.min_face]
        return sorted(faces, key=lambda f: f.box.area, reverse=True)


def _run(det: object, rgb: np.ndarray, dx: int, dy: int) -> list[Face]:
    mp = _mediapipe()
    h, w = rgb.shape[:2]
    result = det.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb))  # type: ignore[attr-defined]
    faces = []
    for d in result.detections:
        b = d.bounding_box
        x0, y0 = max(0, b.origin_x), max(0, b.origin_y)
        x1, y1 = min(w, b.origin_x + b.width), min(h, b.origin_y + b.height)
        if x1 <= x0 or y1 <= y0:
            continue
        keypoints = tuple(Point(k.x * w + dx, k.y * h + dy) for k in d.keypoints)
        faces.append(Face(Box(x0 + dx, y0 + dy, x1 - x0, y1 - y0), float(d.categories[0].score), keypoints))
    return faces


def _tiles(w: int, h: int, overlap: float) -> list[tuple[int, int, int, int]]:
    """2x2 tiles, each (1 + overlap) / 2 of the image on each side."""
    tw, th = int(w * (1 + overlap) / 2), int(h * (1 + overlap) / 2)
    return [(x, y, x + tw, y + th) for y in (0, h - th) for x in (0, w - tw)]


def _overlap(a: Box, b: Box) -> float:
    ix = max(0.0, min(a.x + a.width, b.x + b.width) - max(a.x, b.x))
    iy = max(0.0, min(a.y + a.height, b.y + b.height) - max(a.y, b.y))
    return ix * iy / max(1e-9, min(a.area, b.area))


def _merge(by_priority: list[list[Face]], threshold: float) -> list[Face]:
    """Greedy: a detection is kept unless it overlaps one kept before it (earlier lists first,
    higher scores first within a list)."""
    kept: list[Face] = []
    for faces in by_priority:
        for f in sorted(faces, key=lambda f: f.score, reverse=True):
            if all(_overlap(f.box, k.box) < threshold for k in kept):
                kept.append(f)
    return kept
