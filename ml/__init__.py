"""Face detection, alignment and age estimation. Imports nothing from `api/` or FastAPI.

`ml.serving`: what the service runs (no torch); `ml.training`: the torch side (networks, data,
training, evaluation, the ONNX export); `ml.paths`: where the weights are; `ml.bands`: the age bands;
`ml.batch`: bulk scoring on Ray. The names below are the package's public face.
"""

from ml.serving.boxes import Box, Face, Point
from ml.serving.images import (
    CorruptImage,
    EmptyImage,
    ImageError,
    ImageTooLarge,
    LoadedImage,
    UnsupportedImage,
    load_image,
    reencode_jpeg,
)
from ml.serving.predictor import Detection, FaceAge, Prediction, Predictor, PredictorSettings

__all__ = [
    "Box",
    "CorruptImage",
    "Detection",
    "EmptyImage",
    "Face",
    "FaceAge",
    "ImageError",
    "ImageTooLarge",
    "LoadedImage",
    "Point",
    "Prediction",
    "Predictor",
    "PredictorSettings",
    "UnsupportedImage",
    "load_image",
    "reencode_jpeg",
]
