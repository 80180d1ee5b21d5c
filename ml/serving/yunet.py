"""YuNet (libfacedetection's small face detector) on ONNX Runtime, its boxes and keypoints mapped onto
BlazeFace's; one of `ml.serving.faces.FaceDetector`'s passes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ml.paths import WEIGHTS_DIR
from ml.serving.boxes import Box, Face, Point

YUNET_MODEL = WEIGHTS_DIR / "yunet_s_dynamic.onnx"

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

        from ml.serving.runtime import session_options

        # ONNX Runtime's memory arena keeps what the largest input needed (about 90 MB at 1280 x 1280,
        # the largest input YuNet gets here); without it every run allocates its activations afresh,
        # which under the serving process's allocator settings (ml/serving/runtime.py) is fresh pages every time.
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
