"""MediaPipe's BlazeFace models (short-range and full-range) and the ways `ml.serving.faces.FaceDetector`
runs them: on the whole image, on tiles, on a padded canvas, turned. Which of them run on a photo is
decided there."""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np

from ml.paths import WEIGHTS_DIR
from ml.serving.boxes import Box, Face, Point

FULL_RANGE_MODEL = WEIGHTS_DIR / "face_detection_full_range_sparse.tflite"
SHORT_RANGE_MODEL = WEIGHTS_DIR / "face_detection_short_range.tflite"

# MediaPipe's C++ side logs to stderr through glog and TFLite; keep it to errors.
os.environ.setdefault("GLOG_minloglevel", "2")


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


def create(model_path: Path, min_score: float) -> object:
    _mediapipe()
    from mediapipe.tasks.python import BaseOptions, vision

    options = vision.FaceDetectorOptions(
        base_options=BaseOptions(model_asset_path=str(model_path)), min_detection_confidence=min_score)
    return vision.FaceDetector.create_from_options(options)


def tiled(det: object, rgb: np.ndarray, n: int, overlap: float, min_score: float) -> list[Face]:
    h, w = rgb.shape[:2]
    found = []
    for x0, y0, x1, y1 in _tiles(w, h, overlap, n):
        tile = np.ascontiguousarray(rgb[y0:y1, x0:x1])
        found += [f for f in run(det, tile, x0, y0) if f.score >= min_score]
    return found


def padded(det: object, rgb: np.ndarray) -> list[Face]:
    """The image in the middle of a gray canvas twice its size, faces back in the image's pixels."""
    h, w = rgb.shape[:2]
    canvas = np.full((2 * h, 2 * w, 3), 128, np.uint8)
    canvas[h // 2: h // 2 + h, w // 2: w // 2 + w] = rgb
    return [_clipped(f, w, h) for f in run(det, canvas, -(w // 2), -(h // 2))]


def turned(det: object, rgb: np.ndarray, min_score: float) -> list[Face]:
    """Faces of the image turned by 90, 270 and 180 degrees, in the upright image's pixels; the
    turn with the most faces (then the highest scores) wins."""
    h, w = rgb.shape[:2]
    best: list[Face] = []
    for k in (1, 3, 2):  # np.rot90 turns counter-clockwise k times
        found = [f for f in run(det, np.ascontiguousarray(np.rot90(rgb, k)), 0, 0) if f.score >= min_score]
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


def run(det: object, rgb: np.ndarray, dx: int, dy: int) -> list[Face]:
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
