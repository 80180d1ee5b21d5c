"""Where the package's data files are: the weights folder (`ml/weights/`: detectors, landmarks, age
models) and the recorded UTKFace split. Every module takes these paths from here. Imports nothing."""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).parent
WEIGHTS_DIR = PACKAGE_DIR / "weights"
# The model the service ships, exported for the serving runtime (`python -m ml export`) from the
# .safetensors file of the same name beside it; the imported original is there too, for comparison.
DEFAULT_AGE_WEIGHTS = WEIGHTS_DIR / "resnet10x3-utkface-v2.onnx"
# The age network imported from Cydral's ONNX file (`python -m ml.training.import_weights`): where
# training starts by default.
IMPORTED_AGE_WEIGHTS = WEIGHTS_DIR / "cydral-resnet10-v1.safetensors"
SPLIT_FILE = PACKAGE_DIR / "splits" / "utkface.csv"
