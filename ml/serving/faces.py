"""Face detection with MediaPipe's BlazeFace models and YuNet: passes that run only when a photo needs them.

From 320 pixels on the long side (`yunet_from`), YuNet (libfacedetection's small detector, on ONNX
Runtime) looks for the faces BlazeFace cannot see: small ones (down to about 10 px), crowds, gray and
badly exposed photos. It runs on the photo reduced to 320 px on the long side, then at 640 and 1280 px
(`yunet_sides`; never above the photo's own size), and stops early where the faces it found are large
enough at that scale that smaller ones would have shown too: after the 320 px pass, when it found one
face of `yunet_portrait_px` or more (a portrait: about 2 ms); after the 640 px pass, when every face
it found is `yunet_fine_px` or more (a group of large faces). A crowd of small faces, or a photo
without any, gets all three. YuNet runs on a portrait by BlazeFace's rule too (a face of a quarter
of the short side): the other faces of such a photo may be small. Its boxes are mapped onto
BlazeFace's (`_YUNET_BOX`): the age model's alignment and the evaluation set's boxes are in that
convention; its keypoints onto BlazeFace's six.
BlazeFace's passes below run as they did without YuNet and decide among themselves, except that:
- a portrait that YuNet settled in its first pass (one face of `yunet_portrait_px` or more) skips
  the short-range pass, whose large face YuNet's stands in for; the full-range pass still looks for
  small faces beside it (faces turned 30 degrees, which YuNet misses): the 640x480 portrait costs the
  full-range run and one small YuNet run instead of both BlazeFace models;
- tiles do not run when YuNet found the same number of faces at its last two sizes, no fewer than
  BlazeFace's models (a group whose faces all show: the 6-face photo costs 2 BlazeFace and 2 YuNet
  runs instead of 6 BlazeFace runs);
- the turned pass also needs that no YuNet face scored `yunet_turned_below` (YuNet's scores run
  higher: on an upright photo YuNet finds its faces at 0.85 and up).
They keep what YuNet misses: faces turned by 30 degrees or more (YuNet is trained on upright faces),
photos stored on their side. Below 320 px (UTKFace's 200x200 crops) YuNet never runs: those photos
get the same faces, so the same chips, as before it.

The BlazeFace passes, as they run without YuNet (`DetectorSettings.v2()`, and below 320 px):

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
other), then YuNet's (finest pass last), then the full-range model's on the whole image, then the tiles'.

`DetectorSettings.v1()` is the detector as it was before these passes (both models always, 2x2
tiles from 800 px) and `DetectorSettings.v2()` the BlazeFace passes without YuNet, kept for measuring
old against new (bench/detection.py).
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
YUNET_MODEL = WEIGHTS_DIR / "yunet_s_dynamic.onnx"

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
    yunet_sides: tuple[int, ...] = (320, 640, 1280)  # YuNet's passes: the photo's long side reduced to these (): never
    yunet_from: int = 320  # long side in pixels from which YuNet runs
    yunet_portrait_px: float = 40.0  # YuNet stops after its first pass if that found one face this tall
    yunet_fine_px: float = 48.0  # ... after its later passes, if every face found is this tall (at that scale)
    yunet_min_score: float = 0.6
    yunet_turned_below: float = 0.8  # YuNet's scores run higher than BlazeFace's: 0.8 is a weak face for it

    @classmethod
    def v1(cls) -> DetectorSettings:
        """The detector as served until December 2026, kept for side-by-side measurements."""
        return cls(min_score=0.55, short_min_score=0.55, tile_min_score=0.65, tile_from=800, tile_overlap=0.25,
                   portrait_face=0.25, portrait_stop=False, merge_overlap=0.4, min_face=12.0, full_from=0,
                   tile_face=1e9, fine_face=0.0, padded_from=0, turned_from=0, yunet_sides=())

    @classmethod
    def v2(cls) -> DetectorSettings:
        """BlazeFace's passes without YuNet, as served until YuNet joined them (December 2026)."""
        return cls(yunet_sides=())


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
        self._yunet = YuNet() if s.yunet_sides else None  # one ONNX Runtime session serves every thread
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
        long_side = max(h, w)
        yunet = self._yunet if long_side >= s.yunet_from else None
        with self._borrow() as (short, full):
            yunet_found, settled = self._yunet_passes(yunet, rgb) if yunet else ([], False)
            # YuNet settled a portrait: its face stands in for the short-range model's, and the
            # full-range pass still looks for small faces beside it (faces turned 30 degrees, which
            # YuNet misses: skipping it instead lost a quarter of them on the held-out scenes)
            by_priority = [[] if settled else [f for f in _run(short, rgb, 0, 0) if f.score >= s.short_min_score]]
            portrait = s.portrait_face * min(h, w)
            if not (s.portrait_stop and _largest(by_priority) >= portrait):
                if long_side >= s.full_from:
                    by_priority.append([f for f in _run(full, rgb, 0, 0) if f.score >= s.min_score])
                # YuNet found the same faces at two sizes, and no fewer than BlazeFace: a group whose
                # faces all show; tiles would find none more (on a photo turned 30 degrees YuNet finds
                # more faces at each size, and the tiles do run)
                stable = len(yunet_found) >= 2 and len(yunet_found[-1]) == len(yunet_found[-2]) \
                    >= sum(len(found) for found in by_priority) > 0
                if long_side >= s.tile_from and _largest(by_priority) < portrait \
                        and _smallest(by_priority) < s.tile_face * long_side and not stable:
                    by_priority.append(_tiled(full, rgb, 2, s.tile_overlap, s.tile_min_score))
                    if 0 < _smallest(by_priority) < s.fine_face * long_side:
                        by_priority.append(_tiled(full, rgb, 3, s.tile_overlap, s.tile_min_score))
            if not any(by_priority) and not any(yunet_found) and s.padded_from and long_side >= s.padded_from:
                by_priority.append([f for f in _padded(short, rgb) if f.score >= s.padded_min_score])
            best = max((f.score for found in by_priority for f in found), default=0.0)
            best_yunet = max((f.score for found in yunet_found for f in found), default=0.0)
            if s.turned_from and long_side >= s.turned_from and (best == 0.0 or best < s.turned_below) \
                    and best_yunet < s.yunet_turned_below:
                by_priority.append(_turned(full, rgb, s.turned_min_score))
        # BlazeFace's passes decide among themselves as they did without YuNet (above); in the merge,
        # YuNet's faces rank after the short-range model's and before the full-range model's
        faces = _merge(by_priority[:1] + yunet_found + by_priority[1:], s.merge_overlap)
        faces = [f for f in faces if min(f.box.width, f.box.height) >= s.min_face]
        return sorted(faces, key=lambda f: f.box.area, reverse=True)

    def _yunet_passes(self, yunet: YuNet, rgb: np.ndarray) -> tuple[list[list[Face]], bool]:
        """YuNet on the photo reduced to each of `yunet_sides` in turn, until the photo's own size or
        until faces found are large enough at that scale that smaller ones would have shown too: at the
        first size, one face (a portrait: then True) of `yunet_portrait_px` or more; after it, every
        face found of `yunet_fine_px` or more."""
        s = self.settings
        long_side = max(rgb.shape[:2])
        passes = []
        for side in s.yunet_sides:
            found = yunet.detect(rgb, side, s.yunet_min_score)
            passes.append(found)
            smallest = min((f.box.height for f in found), default=0.0) * min(1.0, side / long_side)
            if len(passes) == 1 and len(found) == 1 and smallest >= s.yunet_portrait_px:
                return passes, True
            if long_side <= 1.15 * side:
                break
            if len(passes) > 1 and smallest >= s.yunet_fine_px:
                break
        return passes, False

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


# YuNet's box is narrower and taller than BlazeFace's and sits higher: BlazeFace's box of the same face
# has its centre 6% of YuNet's height lower, 1.09 x its width and 0.89 x its height (medians over 1,632
# faces of the evaluation set's dev scenes). Ears, which YuNet does not give, sit about where BlazeFace
# puts them from the eyes: the eye midpoint -/+ 0.98 x the eye-to-eye vector, 0.34 of it below.
_YUNET_BOX = (0.06, 1.09, 0.89)
_YUNET_EARS = (0.98, 0.34)
_YUNET_STRIDES = (8, 16, 32)
_YUNET_NMS = 0.3  # IoU above which two of YuNet's boxes are one face (OpenCV's FaceDetectorYN default)
YUNET_MEMORY = ("keep", "shrink", "shrink-large", "off")  # what YuNet does with its arena (YuNet)
_YUNET_LARGE = 640 * 640  # pixels of the largest input of YuNet's 320 and 640 px passes


class YuNet:
    """YuNet (ShiqiYu/libfacedetection.train, `yunet_s`) on ONNX Runtime, decoded as OpenCV's
    `cv2.FaceDetectorYN` decodes it: BGR pixels 0-255, padded to a multiple of 32, per stride a
    score sqrt(class x objectness), a box and five landmarks per cell. OpenCV is not imported (about
    55 MB of a server's memory); ONNX Runtime runs it about 2 x faster here on one thread
    (bench/yunet_runtime.py)."""

    def __init__(self, model_path: Path = YUNET_MODEL, memory: str = "shrink-large") -> None:
        import onnxruntime as ort

        from ml.runtime import session_options

        # ONNX Runtime's memory arena keeps what the largest input needed (about 90 MB at 1280 x 1280,
        # the largest input YuNet gets here); without it every run allocates its activations afresh,
        # which under the serving process's allocator settings (ml/runtime.py) is fresh pages every time.
        # `memory` (YUNET_MEMORY): "keep" the arena as it grows; "shrink" it after every run, or only
        # after runs on inputs larger than 640 x 640 ("shrink-large", served); "off". bench/yunet_memory.py,
        # after 200 mixed photos: 218 / 176 / 168 / 171 MiB resident (164 after start-up); the 6-face
        # photo 34 / 41 / 39 / 52 ms, a 2000 px photo without a face 127 / 150 / 145 / 221 ms: what a
        # shrunk arena gives back, the photo after it faults in again.
        if memory not in YUNET_MEMORY:
            raise ValueError(f"memory must be one of {YUNET_MEMORY}, not {memory!r}")
        options = session_options()
        options.enable_cpu_mem_arena = memory != "off"
        self._session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        self._outputs = [o.name for o in self._session.get_outputs()]
        self._shrink = ort.RunOptions()
        self._shrink.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        self._shrink_above = {"shrink": 0, "shrink-large": _YUNET_LARGE}.get(memory)

    def detect(self, rgb: np.ndarray, side: int = 0, min_score: float = 0.6) -> list[Face]:
        """Faces in `rgb` reduced to about `side` pixels on its long side (0, or a smaller image: as it
        is), in `rgb`'s pixels, boxes in BlazeFace's convention."""
        small = _reduced(rgb, side) if side else rgb
        scale = small.shape[1] / rgb.shape[1]
        sh, sw = small.shape[:2]
        x = np.zeros((1, 3, -(-sh // 32) * 32, -(-sw // 32) * 32), np.float32)
        x[0, :, :sh, :sw] = small[..., ::-1].transpose(2, 0, 1)
        shrink = self._shrink_above is not None and sh * sw > self._shrink_above
        out = self._session.run(None, {"input": x}, self._shrink if shrink else None)
        rows = self._decode(dict(zip(self._outputs, out, strict=True)),
                            x.shape[3], x.shape[2], min_score)
        return [_yunet_face(r, scale) for r in _nms(rows, _YUNET_NMS)]

    @staticmethod
    def _decode(out: dict[str, np.ndarray], pad_w: int, pad_h: int, min_score: float) -> np.ndarray:
        """Rows of x, y, w, h, five landmarks (x, y), score, in the input's pixels."""
        rows = []
        for stride in _YUNET_STRIDES:
            cols = pad_w // stride
            score = np.sqrt(np.clip(out[f"cls_{stride}"][0, :, 0], 0, 1) * np.clip(out[f"obj_{stride}"][0, :, 0], 0, 1))
            keep = np.nonzero(score >= min_score)[0]
            if not len(keep):
                continue
            c, r = (keep % cols).astype(np.float32), (keep // cols).astype(np.float32)
            box, kps = out[f"bbox_{stride}"][0, keep], out[f"kps_{stride}"][0, keep]
            cx, cy = (c + box[:, 0]) * stride, (r + box[:, 1]) * stride
            bw, bh = np.exp(box[:, 2]) * stride, np.exp(box[:, 3]) * stride
            points = np.empty((len(keep), 10), np.float32)
            points[:, 0::2] = (kps[:, 0::2] + c[:, None]) * stride
            points[:, 1::2] = (kps[:, 1::2] + r[:, None]) * stride
            rows.append(np.column_stack([cx - bw / 2, cy - bh / 2, bw, bh, points, score[keep]]))
        return np.concatenate(rows) if rows else np.zeros((0, 15), np.float32)


def _reduced(rgb: np.ndarray, side: int) -> np.ndarray:
    """`rgb` with its long side brought down to `side` (never up): first by an integer factor (Pillow's
    `reduce`, a box filter: 1 ms for 1280 -> 320 px where one bilinear resize takes 8), then by a
    bilinear resize of the much smaller image when what is left is more than 15% too large."""
    from PIL import Image

    long_side = max(rgb.shape[:2])
    if long_side <= side:
        return rgb
    img = Image.fromarray(rgb)
    if long_side // side >= 2:
        img = img.reduce(long_side // side)
    if max(img.size) > 1.15 * side:
        f = side / max(img.size)
        img = img.resize((max(1, round(img.width * f)), max(1, round(img.height * f))), Image.Resampling.BILINEAR)
    return np.asarray(img)


def _nms(rows: np.ndarray, threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression by IoU, highest score first."""
    kept: list[np.ndarray] = []
    for r in rows[np.argsort(-rows[:, 14], kind="stable")]:
        if all(_iou(r[:4], k[:4]) <= threshold for k in kept):
            kept.append(r)
    return np.array(kept).reshape(-1, 15)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return float(inter / max(1e-9, a[2] * a[3] + b[2] * b[3] - inter))


def _yunet_face(r: np.ndarray, scale: float) -> Face:
    """One of YuNet's rows as a Face in the unscaled image: BlazeFace's box, BlazeFace's six keypoints
    (right eye, left eye, nose tip, mouth centre, and the ears estimated from the eyes)."""
    r = r.astype(np.float64) / np.array([scale] * 14 + [1.0])
    x, y, w, h = r[:4]
    down, wide, tall = _YUNET_BOX
    cx, cy = x + w / 2, y + h / 2 + down * h
    box = Box(float(cx - wide * w / 2), float(cy - tall * h / 2), float(wide * w), float(tall * h))
    reye, leye, nose = r[4:6], r[6:8], r[8:10]
    mouth = (r[10:12] + r[12:14]) / 2
    mid, u = (reye + leye) / 2, leye - reye
    v = np.array([-u[1], u[0]])  # the eye line turned a quarter: points down the face
    side, below = _YUNET_EARS
    points = [reye, leye, nose, mouth, mid - side * u + below * v, mid + side * u + below * v]
    return Face(box, float(r[14]), tuple(Point(float(p[0]), float(p[1])) for p in points))
