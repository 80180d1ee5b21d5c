"""Face detection with MediaPipe's BlazeFace models: passes that run only when a photo needs them.

- The short-range model (128x128 input) finds faces that fill much of the frame: selfies and
  close-up crops, where the full-range model misses half of them (measured on UTKFace crops:
  short-range 99%, full-range 45%). It runs first, on every photo. A face it finds that is a
  quarter of the short side or more makes the photo a portrait, and the search ends there: a
  portrait costs one short-range pass (about 2 ms) instead of both models (about 6 ms).
- The full-range model (192x192 input) finds faces down to about 1/15 of the frame; it runs on
  the whole image when that is at least `full_from` pixels on the long side (below that the faces
  it alone could find would be under `min_face`).
- Tiles, for the small faces of group photos: from `tile_from` pixels on the long side, when no
  face was found or the smallest is under `tile_face` of the long side, 2x2 overlapping tiles (on
  a small photo the tiles are enlarged to the model's input: the "upscaled pass"); when the
  smallest face found then is under `fine_face` of the long side (a crowd of small faces), 3x3
  tiles as well. Faces found only in a tile need a stricter score: tiles give the detector more
  chances to see a face in a pattern. (Each tile is one more full-range run, about 4.4 ms here.)
- Only when nothing was found: the short-range model on the image set in a gray canvas twice its
  size (a face that fills the whole frame, cut by its edges, is missed as it is: 2% of UTKFace
  crops). When nothing was found, or nothing with a score of `turned_below`, the full-range model
  on the image turned by 90, 270 and 180 degrees (a photo whose EXIF orientation was lost), with a
  stricter score; the turn with the most faces adds its faces.
Detections of one face are merged by overlap. The short-range model's box stands for a face it
found (it is the better judge of a large face, and one model's boxes are consistent with each
other), then the full-range model's on the whole image, then the tiles'.

`DetectorSettings.v1()` is the detector as it was before these passes (both models always, 2x2
tiles from 800 px), kept for measuring old against new (bench/detection.py).
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
    tile_from: int = 320  # long side in pixels from which 2x2 tiles are also searched
    tile_overlap: float = 0.25
    portrait_face: float = 0.25  # no tiles once a face this share of the short side is found
    portrait_stop: bool = True  # ... and no full-range pass either, when the short-range model found it
    merge_overlap: float = 0.4  # intersection over the smaller box above which two boxes are one face
    min_face: float = 12.0  # pixels; smaller boxes are too small to say anything about
    full_from: int = 200  # long side in pixels from which the full-range model runs on the whole image
    tile_face: float = 0.12  # tiles only when no face was found or the smallest is under this share of the long side
    fine_face: float = 0.075  # 3x3 tiles too when the smallest face found is under this share of the long side
    padded_from: int = 96  # nothing found: short-range on the image padded to twice its size (0: never)
    padded_min_score: float = 0.75  # a real face that fills the frame scores 0.85+ there; a coffee cup 0.6
    turned_from: int = 320  # nothing found: full-range on the image turned 90/270/180 degrees (0: never)
    turned_min_score: float = 0.7
    turned_below: float = 0.7  # ... also when no face found scores this much (0: only when none was found)

    @classmethod
    def v1(cls) -> DetectorSettings:
        """The detector as served until December 2026, kept for side-by-side measurements."""
        return cls(min_score=0.55, short_min_score=0.55, tile_min_score=0.65, tile_from=800, tile_overlap=0.25,
                   portrait_face=0.25, portrait_stop=False, merge_overlap=0.4, min_face=12.0, full_from=0,
                   tile_face=1e9, fine_face=0.0, padded_from=0, turned_from=0)


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
            by_priority = [[f for f in _run(short, rgb, 0, 0) if f.score >= s.short_min_score]]
            portrait = s.portrait_face * min(h, w)
            if not (s.portrait_stop and _largest(by_priority) >= portrait):
                if max(h, w) >= s.full_from:
                    by_priority.append([f for f in _run(full, rgb, 0, 0) if f.score >= s.min_score])
                if max(h, w) >= s.tile_from and _largest(by_priority) < portrait \
                        and _smallest(by_priority) < s.tile_face * max(h, w):
                    by_priority.append(_tiled(full, rgb, 2, s.tile_overlap, s.tile_min_score))
                    if 0 < _smallest(by_priority) < s.fine_face * max(h, w):
                        by_priority.append(_tiled(full, rgb, 3, s.tile_overlap, s.tile_min_score))
            if not any(by_priority) and s.padded_from and max(h, w) >= s.padded_from:
                by_priority.append([f for f in _padded(short, rgb) if f.score >= s.padded_min_score])
            best = max((f.score for found in by_priority for f in found), default=0.0)
            if s.turned_from and max(h, w) >= s.turned_from and (best == 0.0 or best < s.turned_below):
                by_priority.append(_turned(full, rgb, s.turned_min_score))
        faces = _merge(by_priority, s.merge_overlap)
        faces = [f for f in faces if min(f.box.width, f.box.height) >= s.min_face]
        return sorted(faces, key=lambda f: f.box.area, reverse=True)


def _largest(by_priority: list[list[Face]]) -> float:
    return max((f.box.height for found in by_priority for f in found), default=0.0)


def _smallest(by_priority: list[list[Face]]) -> float:
    """The smallest face's height; 0 when there is none (nothing found: look closer)."""
    return min((f.box.height for found in by_priority for f in found), default=0.0)


def _tiled(det: object, rgb: np.ndarray, n: int, overlap: float, min_score: float) -> list[Face]:
    h, w = rgb.shape[:2]
    found = []
    for x0, y0, x1, y1 in _tiles(w, h, overlap, n):
        tile = np.ascontiguousarray(rgb[y0:y1, x0:x1])
        found += [f for f in _run(det, tile, x0, y0) if f.score >= min_score]
    return found


def _padded(det: object, rgb: np.ndarray) -> list[Face]:
    """The image in the middle of a gray canvas twice its size, faces back in the image's pixels."""
    h, w = rgb.shape[:2]
    canvas = np.full((2 * h, 2 * w, 3), 128, np.uint8)
    canvas[h // 2: h // 2 + h, w // 2: w // 2 + w] = rgb
    return [_clipped(f, w, h) for f in _run(det, canvas, -(w // 2), -(h // 2))]


def _turned(det: object, rgb: np.ndarray, min_score: float) -> list[Face]:
    """Faces of the image turned by 90, 270 and 180 degrees, in the upright image's pixels; the
    turn with the most faces (then the highest scores) wins."""
    h, w = rgb.shape[:2]
    best: list[Face] = []
    for k in (1, 3, 2):  # np.rot90 turns counter-clockwise k times
        found = [f for f in _run(det, np.ascontiguousarray(np.rot90(rgb, k)), 0, 0) if f.score >= min_score]
        found = [_unturned(f, k, w, h) for f in found]
        if (len(found), sum(f.score for f in found)) > (len(best), sum(f.score for f in best)):
            best = found
    return best


def _unturned(face: Face, k: int, w: int, h: int) -> Face:
    """A face found on np.rot90(image, k), mapped back onto the w x h image."""
    def back(x: float, y: float) -> tuple[float, float]:
        if k == 1:
            return w - y, x
        if k == 3:
            return y, h - x
        return w - x, h - y

    b = face.box
    corners = [back(b.x, b.y), back(b.x + b.width, b.y + b.height)]
    xs, ys = [c[0] for c in corners], [c[1] for c in corners]
    box = Box(min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys))
    return Face(box, face.score, tuple(Point(*back(p.x, p.y)) for p in face.keypoints))


def _clipped(face: Face, w: int, h: int) -> Face:
    b = face.box
    x0, y0 = max(0.0, b.x), max(0.0, b.y)
    x1, y1 = min(float(w), b.x + b.width), min(float(h), b.y + b.height)
    return Face(Box(x0, y0, max(0.0, x1 - x0), max(0.0, y1 - y0)), face.score, face.keypoints)


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


def _tiles(w: int, h: int, overlap: float, n: int = 2) -> list[tuple[int, int, int, int]]:
    """n x n overlapping tiles, each (1 + overlap) / n of the image on each side."""
    tw, th = int(w * (1 + overlap) / n), int(h * (1 + overlap) / n)
    xs = [round(i * (w - tw) / (n - 1)) for i in range(n)]
    ys = [round(i * (h - th) / (n - 1)) for i in range(n)]
    return [(x, y, x + tw, y + th) for y in ys for x in xs]


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
