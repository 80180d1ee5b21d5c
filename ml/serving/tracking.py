"""Faces followed across the frames of a video: a stable id per face and an age that does not jitter.

The predictor decides which faces a frame holds and each one's age and interval; the tracker only
follows them. A face of a new frame takes the id of the face of the recent frames whose box it
overlaps most (intersection over union, in fractions of the frame so that a change of frame size
does not matter), at least `min_overlap`. A face not seen for up to `keep_seconds` keeps its id and
can take it back: someone who turns away or leaves the frame for a moment comes back as the same face.

The age shown is an exponential moving average of the face's ages over time (time constant
`smoothing_seconds`, whatever the frame rate): the network's estimate moves by a year or more between
two frames of a still face, the average by much less. The interval is the predictor's, for this
frame, never narrowed (averaging the ends of intervals would narrow them below their calibrated
coverage), and widened to hold the shown age when that has not yet followed a jump of the frame's:
an age is never shown outside its own range.

Plain Python and numpy; one tracker per video stream, used by one caller at a time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ml.serving.predictor import FaceAge, Prediction


@dataclass(frozen=True, slots=True)
class TrackedFace:
    id: int  # the same while the face stays in view (1, 2, ... per tracker)
    face: FaceAge  # as the predictor gave it for this frame
    age: float  # smoothed over the recent frames
    steady: bool  # followed for `steady_seconds` or more: its smoothed age has settled

    @property
    def age_interval(self) -> tuple[float, float]:
        """This frame's calibrated interval, widened where needed to hold the smoothed age."""
        low, high = self.face.age_interval
        return min(low, self.age), max(high, self.age)


@dataclass(slots=True)
class _Track:
    id: int
    box: np.ndarray  # x0, y0, x1, y1 in fractions of the frame
    age: float
    first_seen: float
    last_seen: float


def overlap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of every box of `a` (n, 4) with every box of `b` (m, 4): (n, m)."""
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


class FaceTracker:
    def __init__(self, *, min_overlap: float = 0.3, keep_seconds: float = 1.0, smoothing_seconds: float = 1.5,
                 steady_seconds: float = 2.0) -> None:
        self.min_overlap = min_overlap
        self.keep_seconds = keep_seconds
        self.smoothing_seconds = smoothing_seconds
        self.steady_seconds = steady_seconds
        self._tracks: list[_Track] = []
        self._next_id = 1

    def update(self, prediction: Prediction, now: float) -> list[TrackedFace]:
        """The faces of a frame taken at `now` (seconds, monotonic), in the predictor's order, with their ids."""
        self._tracks = [t for t in self._tracks if now - t.last_seen <= self.keep_seconds]
        w, h = max(prediction.width, 1), max(prediction.height, 1)
        boxes = np.array([[f.face.box.x / w, f.face.box.y / h, (f.face.box.x + f.face.box.width) / w,
                           (f.face.box.y + f.face.box.height) / h] for f in prediction.faces]).reshape(-1, 4)
        matched: dict[int, _Track] = {}  # face index -> track
        if self._tracks and len(boxes):
            iou = overlap(boxes, np.array([t.box for t in self._tracks]))
            # Greedy, best overlap first: each face takes at most one track and each track one face.
            for flat in np.argsort(-iou, axis=None):
                i, j = divmod(int(flat), iou.shape[1])
                if iou[i, j] < self.min_overlap:
                    break
                track = self._tracks[j]
                if i not in matched and all(t is not track for t in matched.values()):
                    matched[i] = track
        result = []
        for i, face in enumerate(prediction.faces):
            track = matched.get(i)
            if track is None:
                track = _Track(self._next_id, boxes[i], face.age, now, now)
                self._next_id += 1
                self._tracks.append(track)
            else:
                weight = 1 - math.exp(-max(now - track.last_seen, 0.0) / self.smoothing_seconds)
                track.age += weight * (face.age - track.age)
                track.box, track.last_seen = boxes[i], now
            result.append(TrackedFace(track.id, face, track.age, now - track.first_seen >= self.steady_seconds))
        return result
