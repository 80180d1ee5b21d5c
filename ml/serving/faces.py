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
BlazeFace's (`ml.serving.yunet._YUNET_BOX`): the age model's alignment and the evaluation set's boxes are in that
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

import queue
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from ml.serving import blazeface
from ml.serving.boxes import Box, Face, Point
from ml.serving.yunet import YuNet

__all__ = ["Box", "DetectorSettings", "Face", "FaceDetector", "Point"]


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


class FaceDetector:
    """A pool of MediaPipe graph pairs (short-range, full-range): one graph is not safe to call
    from two threads at once, so each call borrows a pair for its duration. `size` bounds how many
    detections run in parallel."""

    def __init__(self, settings: DetectorSettings | None = None, size: int = 2) -> None:
        s = self.settings = settings or DetectorSettings()
        self._yunet = YuNet() if s.yunet_sides else None  # one ONNX Runtime session serves every thread
        self._all = [
            (blazeface.create(blazeface.SHORT_RANGE_MODEL, s.short_min_score),
             blazeface.create(blazeface.FULL_RANGE_MODEL, min(s.min_score, s.tile_min_score)))
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

    def detect(self, rgb: np.ndarray, *, video: bool = False) -> list[Face]:
        """All faces in an RGB uint8 image, largest first, in that image's pixels.

        `video`: the image is a frame of a live stream (`ml.serving.tracking` follows its faces), where
        a portrait that YuNet settled in its first pass is taken as it is: the full-range pass, which
        looks beside it for small faces turned 30 degrees or more, is left out (about 6 ms of the 480x360
        frame's 12). A face turned away for a moment keeps its id for a second; the next frames look
        again. Every other frame (no face, several, small ones) gets the whole search, as a photo does."""
        s = self.settings
        h, w = rgb.shape[:2]
        long_side = max(h, w)
        yunet = self._yunet if long_side >= s.yunet_from else None
        with self._borrow() as (short, full):
            yunet_found, settled = self._yunet_passes(yunet, rgb) if yunet else ([], False)
            if settled and video:
                return self._kept(yunet_found)
            # YuNet settled a portrait: its face stands in for the short-range model's, and the
            # full-range pass still looks for small faces beside it (faces turned 30 degrees, which
            # YuNet misses: skipping it instead lost a quarter of them on the held-out scenes)
            short_found = [] if settled else blazeface.run(short, rgb, 0, 0)
            by_priority = [[f for f in short_found if f.score >= s.short_min_score]]
            portrait = s.portrait_face * min(h, w)
            if not (s.portrait_stop and _largest(by_priority) >= portrait):
                if long_side >= s.full_from:
                    by_priority.append([f for f in blazeface.run(full, rgb, 0, 0) if f.score >= s.min_score])
                # YuNet found the same faces at two sizes, and no fewer than BlazeFace: a group whose
                # faces all show; tiles would find none more (on a photo turned 30 degrees YuNet finds
                # more faces at each size, and the tiles do run)
                stable = len(yunet_found) >= 2 and len(yunet_found[-1]) == len(yunet_found[-2]) \
                    >= sum(len(found) for found in by_priority) > 0
                if long_side >= s.tile_from and _largest(by_priority) < portrait \
                        and _smallest(by_priority) < s.tile_face * long_side and not stable:
                    by_priority.append(blazeface.tiled(full, rgb, 2, s.tile_overlap, s.tile_min_score))
                    if 0 < _smallest(by_priority) < s.fine_face * long_side:
                        by_priority.append(blazeface.tiled(full, rgb, 3, s.tile_overlap, s.tile_min_score))
            if not any(by_priority) and not any(yunet_found) and s.padded_from and long_side >= s.padded_from:
                by_priority.append([f for f in blazeface.padded(short, rgb) if f.score >= s.padded_min_score])
            best = max((f.score for found in by_priority for f in found), default=0.0)
            best_yunet = max((f.score for found in yunet_found for f in found), default=0.0)
            if s.turned_from and long_side >= s.turned_from and (best == 0.0 or best < s.turned_below) \
                    and best_yunet < s.yunet_turned_below:
                by_priority.append(blazeface.turned(full, rgb, s.turned_min_score))
        # BlazeFace's passes decide among themselves as they did without YuNet (above); in the merge,
        # YuNet's faces rank after the short-range model's and before the full-range model's
        return self._kept(by_priority[:1] + yunet_found + by_priority[1:])

    def _kept(self, by_priority: list[list[Face]]) -> list[Face]:
        """The detections merged (earlier lists first), those large enough, largest first."""
        faces = _merge(by_priority, self.settings.merge_overlap)
        faces = [f for f in faces if min(f.box.width, f.box.height) >= self.settings.min_face]
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
