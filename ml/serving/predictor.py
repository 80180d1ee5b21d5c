"""`Predictor`: bytes of a photo in, faces and ages out. Built once, shared by all threads."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ml.paths import DEFAULT_AGE_WEIGHTS
from ml.serving import runtime
from ml.serving.align import FaceAligner
from ml.serving.faces import DetectorSettings, Face, FaceDetector
from ml.serving.gate import FaceGate, Verdict
from ml.serving.images import DEFAULT_MAX_PIXELS, DEFAULT_WORK_SIDE, LoadedImage, load_image


@dataclass(frozen=True, slots=True)
class FaceAge:
    face: Face
    age: float
    age_interval: tuple[float, float]
    age_spread: float
    quality: float = 1.0  # the gate's (ml.gate): 0-1
    range_note: str | None = None  # why `age_interval` is wider: "the photo is blurred" (ml.serving.interval)


@dataclass(frozen=True, slots=True)
class SetAside:
    """A box the detector found that is not worth an age (ml.gate): `not_a_face`, `too_blurred`, `too_small`."""

    face: Face
    reason: str
    quality: float


@dataclass(frozen=True, slots=True)
class Detection:
    width: int
    height: int
    faces: list[Face]  # worth an age
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    quality: list[float] = field(default_factory=list)  # the gate's, one for each of `faces`
    set_aside: list[SetAside] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Prediction:
    width: int
    height: int
    faces: list[FaceAge]  # worth an age
    model_version: str
    timings: dict[str, float] = field(default_factory=dict)
    set_aside: list[SetAside] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class PredictorSettings:
    max_faces: int = 20
    max_pixels: int = DEFAULT_MAX_PIXELS
    work_side: int = DEFAULT_WORK_SIDE
    coverage: float = 0.8  # of the age interval
    parallel: int = 2  # detections that may run at once (one MediaPipe graph each)
    detector: DetectorSettings = field(default_factory=DetectorSettings)


class Predictor:
    """Detector, aligner and age network, loaded once.

    Every method may be called from several threads at once: MediaPipe graphs are borrowed from a
    pool, dlib's predictor and the age model's session are read-only. `age_model` is read once per
    call, so replacing it (one assignment) swaps the model without stopping: a call in progress
    finishes with the model it started with. Load the new one with `ml.serving.runtime.load_age_model(path,
    predictor.cpus)`, so that it sees the photos in flight. Any object with `version` and
    `estimate(chips, coverage)` serves (`ml.serving.runtime.ServedAgeModel`; the torch `ml.training.agemodel.AgeModel`
    for comparison).
    """

    def __init__(self, detector: FaceDetector, aligner: FaceAligner, age_model: runtime.AgeEstimator,
                 settings: PredictorSettings, cpus: runtime.CpuShare | None = None,
                 gate: FaceGate | None = None) -> None:
        self.detector = detector
        self.aligner = aligner
        self.gate = gate or FaceGate()
        self.age_model = age_model
        self.settings = settings
        self.cpus = cpus or runtime.CpuShare()  # photos in flight: see ml.serving.runtime
        self._closed = threading.Event()

    @classmethod
    def load(cls, age_weights: Path | str | None = None, settings: PredictorSettings | None = None,
             *, threads: int | None = None) -> Predictor:
        """`threads`: the most threads one photo's age step may use (default: the process's CPUs;
        `ml.serving.runtime.CpuShare` gives a photo only those no other photo is using)."""
        settings = settings or PredictorSettings()
        cpus = runtime.CpuShare(threads)
        age_model = runtime.load_age_model(Path(age_weights or DEFAULT_AGE_WEIGHTS), cpus)
        detector = FaceDetector(settings.detector, size=settings.parallel)
        return cls(detector, FaceAligner(), age_model, settings, cpus)

    @property
    def version(self) -> str:
        """Names the age weights; reported with every prediction."""
        return self.age_model.version

    def close(self) -> None:
        if not self._closed.is_set():
            self._closed.set()
            self.detector.close()
            self.cpus.close()

    def __enter__(self) -> Predictor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def decode(self, data: bytes) -> LoadedImage:
        """Bytes to an upright RGB image; raises `ml.serving.images.ImageError` subclasses."""
        return load_image(data, max_pixels=self.settings.max_pixels, work_side=self.settings.work_side)

    def _image(self, image: LoadedImage | bytes, timings: dict[str, float]) -> LoadedImage:
        if isinstance(image, LoadedImage):
            return image
        t = time.perf_counter()
        loaded = self.decode(image)
        timings["decode"] = time.perf_counter() - t
        return loaded

    def _faces(self, image: LoadedImage, timings: dict[str, float], video: bool = False
               ) -> tuple[list[Face], np.ndarray, list[Verdict]]:
        """Faces in the pixels of the decoded (possibly reduced) image, largest first, their chips and the
        gate's verdict on each. The gate judges the chip the age step would read, in the pixels it is cut
        from: a face that is small there gives a poor age, however large it is in the uploaded photo.
        `video`: the detector's cheaper schedule for live frames (see FaceDetector.detect)."""
        t = time.perf_counter()
        faces = self.detector.detect(image.rgb, video=video)[: 2 * self.settings.max_faces]
        timings["detect"] = time.perf_counter() - t
        t = time.perf_counter()
        chips = self.chips(image, faces)
        timings["align"] = time.perf_counter() - t
        t = time.perf_counter()
        verdicts = self.gate.judge([min(f.box.width, f.box.height) for f in faces], [f.score for f in faces], chips)
        timings["gate"] = time.perf_counter() - t
        return faces, chips, verdicts

    def _split(self, faces: list[Face], verdicts: list[Verdict], scale: float) -> tuple[list[int], list[SetAside]]:
        """Indices of the faces worth an age (at most `max_faces`), and the others, in photo pixels."""
        kept = [i for i, v in enumerate(verdicts) if v.reason is None][: self.settings.max_faces]
        aside = [SetAside(faces[i].scaled(1 / scale), v.reason, v.quality)
                 for i, v in enumerate(verdicts) if v.reason is not None]
        return kept, aside

    def detect(self, image: LoadedImage | bytes) -> Detection:
        with self.cpus.photo():
            timings: dict[str, float] = {}
            img = self._image(image, timings)
            faces, _, verdicts = self._faces(img, timings)
            kept, aside = self._split(faces, verdicts, img.scale)
        runtime.photo_done()
        return Detection(img.width, img.height, [faces[i].scaled(1 / img.scale) for i in kept], timings,
                         [verdicts[i].quality for i in kept], aside)

    def chips(self, image: LoadedImage, faces: list[Face]) -> np.ndarray:
        return self.aligner.chips(image.rgb, [f.box for f in faces])

    def predict(self, image: LoadedImage | bytes, *, video: bool = False) -> Prediction:
        """`video`: the image is a frame of a live stream (see `FaceDetector.detect`)."""
        with self.cpus.photo():
            result = self._predict(image, video)
        runtime.photo_done()
        return result

    def _predict(self, image: LoadedImage | bytes, video: bool = False) -> Prediction:
        age_model = self.age_model  # once: a swap during this call does not mix two models
        timings: dict[str, float] = {}
        img = self._image(image, timings)
        faces, chips, verdicts = self._faces(img, timings, video)
        kept, aside = self._split(faces, verdicts, img.scale)
        t = time.perf_counter()
        face_px = np.array([faces[i].box.width / img.scale for i in kept])  # in the photo as sent
        estimates = age_model.estimate(chips[kept], self.settings.coverage, face_px) if kept else []
        timings["age"] = time.perf_counter() - t
        results = [
            FaceAge(faces[i].scaled(1 / img.scale), e.age, (e.low, e.high), e.spread, verdicts[i].quality,
                    e.range_note)
            for i, e in zip(kept, estimates, strict=True)
        ]
        return Prediction(img.width, img.height, results, age_model.version, timings, aside)
