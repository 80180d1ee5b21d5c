"""Face detection, alignment and age estimation. Imports nothing from `api/` or FastAPI."""

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
