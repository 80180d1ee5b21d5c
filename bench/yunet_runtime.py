"""YuNet in ONNX Runtime (`ml.serving.yunet.YuNet`, the shipped `yunet_s_dynamic.onnx`) against OpenCV's
`cv2.FaceDetectorYN` running the fixed-size file of the same network (`yunet_s_640_640.onnx`, byte for
byte OpenCV Zoo's `face_detection_yunet_2023mar.onnx`): the same detections, and the time of each.

    .venv/bin/python -m bench.yunet_runtime --opencv-model PATH/yunet_s_640_640.onnx [--repeat 20]

OpenCV is not a dependency of the service's detection (ml/serving/faces.py never imports it); it is in the venv
for this comparison. Both run on one thread, in turns, on the same photo reduced to each size.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from bench.detection import fixed_photos
from bench.machine import describe
from ml.serving.yunet import YuNet, _nms, _reduced

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    import cv2

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--opencv-model", type=Path, required=True, help="yunet_s_640_640.onnx")
    parser.add_argument("--faces", type=Path, default=ROOT.parent / "shared" / "data" / "faces")
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    print(describe())
    cv2.setNumThreads(1)
    yunet = YuNet()
    photo = fixed_photos(args.faces)["6-face photo"]
    print(f"{'input':>10} {'faces':>5} {'max difference':>15} {'OpenCV ms':>10} {'ONNX Runtime ms':>16}")
    for side in (320, 640, 1280):
        rgb = _reduced(photo, side)
        h, w = rgb.shape[:2]
        det = cv2.FaceDetectorYN.create(str(args.opencv_model), "", (w, h), 0.6, 0.3, 5000)
        bgr = np.ascontiguousarray(rgb[..., ::-1])
        ours = _raw(yunet, rgb)
        _, theirs = det.detect(bgr)
        theirs = np.zeros((0, 15), np.float32) if theirs is None else theirs
        diff = _difference(ours, theirs)
        times: dict[str, list[float]] = {"cv2": [], "ort": []}
        for _ in range(args.repeat):
            t = time.perf_counter()
            det.detect(bgr)
            times["cv2"].append(time.perf_counter() - t)
            t = time.perf_counter()
            _raw(yunet, rgb)
            times["ort"].append(time.perf_counter() - t)
        print(f"{w:>4}x{h:<5} {len(ours):>2}/{len(theirs):<2} {diff:>15.4f} {np.median(times['cv2']) * 1000:>10.2f} "
              f"{np.median(times['ort']) * 1000:>16.2f}")


def _raw(yunet: YuNet, rgb: np.ndarray) -> np.ndarray:
    """YuNet's rows (box, landmarks, score) in `rgb`'s pixels, before the mapping onto BlazeFace's box."""
    h, w = rgb.shape[:2]
    x = np.zeros((1, 3, -(-h // 32) * 32, -(-w // 32) * 32), np.float32)
    x[0, :, :h, :w] = rgb[..., ::-1].transpose(2, 0, 1)
    out = dict(zip(yunet._outputs, yunet._session.run(None, {"input": x}), strict=True))
    return _nms(yunet._decode(out, x.shape[3], x.shape[2], 0.6), 0.3)


def _difference(a: np.ndarray, b: np.ndarray) -> float:
    """Largest difference of any value between the two sets of rows (sorted alike); inf if they differ in count."""
    if len(a) != len(b):
        return float("inf")
    a, b = a[np.lexsort(a[:, :2].T)], b[np.lexsort(b[:, :2].T)]
    return float(np.abs(a - b).max()) if len(a) else 0.0


if __name__ == "__main__":
    main()
