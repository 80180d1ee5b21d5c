"""The shapes the API answers with (the SQL tables are in `api.storage.tables`)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict
from pydantic import Field as PydanticField

from api.storage.tables import AuditEvent, ModelCreator, ModelState, ModelVersion, Submission
from ml.bands import band_names

if TYPE_CHECKING:
    import ml


class Point(BaseModel):
    x: float
    y: float


class Box(BaseModel):
    """Top-left corner and size, in pixels of the upright image."""

    x: float
    y: float
    width: float
    height: float


class ImageSize(BaseModel):
    width: int
    height: int


QUALITY = ("How well the age step can read this face, 0-1: the weakest of its size, its sharpness and how "
           "much it looks like a human face, each against the level below which a face is set aside.")
SetAsideReason = Literal["not_a_face", "too_blurred", "too_small"]


class DetectedFace(BaseModel):
    box: Box
    score: float = PydanticField(description="Detector confidence, 0-1.")
    keypoints: list[Point] = PydanticField(
        description="Right eye, left eye, nose tip, mouth, right ear, left ear (the person's right and left)."
    )
    quality: float = PydanticField(description=QUALITY)

    @classmethod
    def of(cls, face: ml.Face, quality: float) -> DetectedFace:
        return cls(box=_box(face.box), score=face.score, keypoints=[Point(x=p.x, y=p.y) for p in face.keypoints],
                   quality=quality)


class PredictedFace(DetectedFace):
    age: float = PydanticField(description="Apparent age in years.")
    age_interval: tuple[float, float] = PydanticField(description="Interval likely to hold the age: [low, high].")
    range_note: str | None = PydanticField(
        default=None,  # a default, so that a submission answered before it existed can be replayed (Idempotency-Key)
        description="Why `age_interval` is wider than for a good photo of the same face, in a few plain words "
                    "(\"the photo is blurred\", \"the face is small\"); null when the photo's quality did not "
                    "widen it."
    )

    @classmethod
    def of_age(cls, face: ml.FaceAge) -> PredictedFace:
        return cls(**DetectedFace.of(face.face, face.quality).model_dump(), age=face.age,
                   age_interval=face.age_interval, range_note=face.range_note)


class SetAsideFace(BaseModel):
    """A box the detector found that is given no age, and why."""

    box: Box
    score: float = PydanticField(description="Detector confidence, 0-1.")
    reason: SetAsideReason = PydanticField(
        description="`not_a_face`: not a human face (an animal, a hand, a pattern); `too_blurred`: too blurred "
                    "to read an age from; `too_small`: too few pixels to read an age from."
    )
    quality: float = PydanticField(description=QUALITY)

    @classmethod
    def of(cls, aside: ml.SetAside) -> SetAsideFace:
        return cls(box=_box(aside.face.box), score=aside.face.score, reason=aside.reason,  # type: ignore[arg-type]
                   quality=aside.quality)


def _box(box: ml.Box) -> Box:
    return Box(x=box.x, y=box.y, width=box.width, height=box.height)


_BOX = {"x": 181.2, "y": 86.5, "width": 118.3, "height": 118.3}
_KEYPOINTS = [{"x": 214.9, "y": 121.3}, {"x": 263.8, "y": 118.7}, {"x": 240.6, "y": 146.0},
              {"x": 241.2, "y": 170.4}, {"x": 189.9, "y": 130.2}, {"x": 293.5, "y": 124.6}]
_FACE = {"box": _BOX, "score": 0.93, "keypoints": _KEYPOINTS, "quality": 1.0}
_AGED_FACE = {**_FACE, "age": 41.7, "age_interval": [33.9, 50.2], "range_note": None}
_ASIDE = {"box": {"x": 12.0, "y": 20.5, "width": 61.0, "height": 61.0}, "score": 0.71, "reason": "too_blurred",
          "quality": 0.31}
SET_ASIDE = ("Boxes the detector found that are not faces worth an age (no age is given for them), largest first; "
             "empty when every box is.")
_VERSION = "resnet10x3-utkface-v2"


class DetectResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"image": {"width": 512, "height": 512},
                                                               "faces": [_FACE], "set_aside": [_ASIDE],
                                                               "set_aside_count": 1}]})
    image: ImageSize
    faces: list[DetectedFace] = PydanticField(description="Faces worth an age, largest first.")
    set_aside: list[SetAsideFace] = PydanticField(description=SET_ASIDE)
    set_aside_count: int = PydanticField(description="How many boxes were set aside: the length of `set_aside`.")


class PredictResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"model_version": _VERSION,
                                                               "image": {"width": 512, "height": 512},
                                                               "faces": [_AGED_FACE], "set_aside": [_ASIDE],
                                                               "set_aside_count": 1}]})
    model_version: str
    image: ImageSize
    faces: list[PredictedFace] = PydanticField(
        description="Faces worth an age, largest first; empty when none was found."
    )
    set_aside: list[SetAsideFace] = PydanticField(description=SET_ASIDE)
    set_aside_count: int = PydanticField(description="How many boxes were set aside: the length of `set_aside`.")


class SubmissionFace(BaseModel):
    box: Box = PydanticField(description="In pixels of the stored photo.")


class StoredImage(BaseModel):
    filename: str = PydanticField(description="The uploaded file's name, cleaned. Never used as a path.")
    content_type: str
    width: int
    height: int
    url: str


class SubmissionRead(BaseModel):
    """A stored submission, as admins see it (without the photo's bytes: follow `image.url`)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": "0b6f6d3e-5d5e-4f8e-9a53-2d1f3c9a7b10", "created_at": "2026-11-26T10:15:00Z",
        "first_name": "Eileen", "true_age": 42, "predicted_age": 41.7, "error": -0.3,
        "face": {"box": _BOX}, "model_version": _VERSION,
        "image": {"filename": "me.jpg", "content_type": "image/jpeg", "width": 512, "height": 512,
                  "url": "/submissions/0b6f6d3e-5d5e-4f8e-9a53-2d1f3c9a7b10/image"}}]})

    id: uuid.UUID
    created_at: datetime
    first_name: str
    true_age: int
    predicted_age: float
    error: float = PydanticField(description="predicted_age - true_age: positive when the guess is older.")
    face: SubmissionFace
    model_version: str
    image: StoredImage

    @classmethod
    def of(cls, row: Submission) -> SubmissionRead:
        return cls(
            id=row.id, created_at=row.created_at, first_name=row.first_name, true_age=row.true_age,
            predicted_age=row.predicted_age, error=row.predicted_age - row.true_age,
            face=SubmissionFace(box=Box(x=row.face_x, y=row.face_y, width=row.face_width, height=row.face_height)),
            model_version=row.model_version,
            image=StoredImage(filename=row.img_filename, content_type=row.img_content_type, width=row.img_width,
                              height=row.img_height, url=f"/submissions/{row.id}/image"),
        )


class SubmissionCreated(BaseModel):
    """What the submitter gets back, once: keep `deletion_token` to withdraw the submission later."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": "0b6f6d3e-5d5e-4f8e-9a53-2d1f3c9a7b10", "first_name": "Eileen", "true_age": 42,
        "predicted_age": 41.7, "error": -0.3, "face": _AGED_FACE, "image": {"width": 512, "height": 512},
        "model_version": _VERSION, "created_at": "2026-11-26T10:15:00Z",
        "deletion_token": "q0c5G8lOZC7mY1m0a7o5u9n0c2z8e1Xw3kq6v4b2r0s"}]})

    id: uuid.UUID
    first_name: str
    true_age: int
    predicted_age: float
    error: float = PydanticField(description="predicted_age - true_age: positive when the guess is older.")
    face: PredictedFace = PydanticField(description="The largest face, in pixels of the stored photo.")
    image: ImageSize = PydanticField(description="Size of the stored photo.")
    model_version: str
    created_at: datetime
    deletion_token: str = PydanticField(
        description="Send it as `X-Deletion-Token` with `DELETE /submissions/{id}`. Shown once; only its hash is kept."
    )


class SubmissionPage(BaseModel):
    items: list[SubmissionRead] = PydanticField(description="Newest first.")
    total: int
    limit: int
    offset: int


class AuditEventRead(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": 42, "at": "2026-12-01T10:15:00Z", "action": "submission.image.read", "actor": "owner",
        "submission_id": "0b6f6d3e-5d5e-4f8e-9a53-2d1f3c9a7b10", "model_version": None,
        "request_id": "76668428def94616b1369dfc51925021", "detail": {}}]})

    id: int
    at: datetime
    action: str = PydanticField(description="What happened, e.g. `submission.read` (see the README).")
    actor: Literal["admin", "owner", "system"]
    submission_id: uuid.UUID | None
    model_version: str | None
    request_id: str | None = PydanticField(description="The request's `X-Request-ID`; none for commands.")
    detail: dict = PydanticField(description="Counts, paging, the ids listed; never a photo, name or token.")

    @classmethod
    def of(cls, row: AuditEvent) -> AuditEventRead:
        return cls.model_validate(row, from_attributes=True)


class AuditPage(BaseModel):
    items: list[AuditEventRead] = PydanticField(description="Newest first.")
    total: int
    limit: int
    offset: int


class Health(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"status": "ok", "database": "ok",
                                                               "model_version": _VERSION}]})
    status: Literal["ok", "degraded"]
    database: Literal["ok", "unavailable"]
    model_version: str
    detail: str | None = PydanticField(
        None, description="Why the database is unavailable, when the service knows (its embedded Postgres "
                          "is being started again, or cannot be).")


# --- the model registry -----------------------------------------------------------------------------


def _band_order(band: str) -> int:
    """Bands in age order (JSONB keeps no key order); a band `ml.training.data` does not name goes last."""
    names = band_names()
    return names.index(band) if band in names else len(names)


def _share(cell: Any) -> float | None:
    """A share from `ml evaluate`'s (faces, share) pair, or a bare number."""
    return cell[-1] if isinstance(cell, list | tuple) else cell


def _ci(cell: Any) -> list[float] | None:
    if isinstance(cell, list | tuple) and len(cell) == 2 and all(isinstance(x, int | float) for x in cell):
        return [float(cell[0]), float(cell[1])]
    return None


class BandFigures(BaseModel):
    band: str = PydanticField(description="Age band of the true ages, e.g. `20-39`, `80+`.")
    faces: int
    mae: float = PydanticField(description="Mean absolute error in years, on the faces of this band.")
    coverage: float | None = PydanticField(
        None, description="Share of true ages inside the predicted interval, on this band (when measured).")
    coverage_ci: list[float] | None = PydanticField(
        None, description="Wilson 95% confidence interval of `coverage`, [low, high] (when measured).")


class BandCoverage(BaseModel):
    band: str = PydanticField(description="Age band, e.g. `20-39`, `80+`.")
    faces: int
    coverage: float = PydanticField(description="Share of true ages inside the predicted interval.")
    coverage_ci: list[float] | None = PydanticField(None, description="Wilson 95% confidence interval, [low, high].")


class DegradedFigures(BaseModel):
    degradation: str = PydanticField(description="`px40` (40 px photo), `blur2` (Gaussian blur, sigma 2), "
                                                 "`gray` or `jpeg15` (JPEG quality 15).")
    faces: int
    mae: float
    coverage: float
    coverage_ci: list[float] | None = None
    median_width: float | None = PydanticField(None, description="Median width of the interval, years.")
    coverage_by_band: list[BandCoverage] = PydanticField(description="By true age band, in age order.")


def _coverage_list(shares: dict, cis: dict) -> list[BandCoverage]:
    return [BandCoverage(band=band, faces=cell[0], coverage=cell[1], coverage_ci=_ci(cis.get(band)))
            for band, cell in sorted(shares.items(), key=lambda kv: _band_order(kv[0]))
            if isinstance(cell, list | tuple) and cell[1] is not None]


class Figures(BaseModel):
    """A model's accuracy on one set of labelled faces."""

    faces: int
    mae: float = PydanticField(description="Mean absolute error in years.")
    coverage: float | None = PydanticField(description="Share of true ages inside the predicted 80% interval.")
    coverage_ci: list[float] | None = PydanticField(None, description="Wilson 95% confidence interval of `coverage`.")
    median_width: float | None = PydanticField(None, description="Median width of the interval, years.")
    by_band: list[BandFigures] = PydanticField(description="By true age band, in age order.")
    coverage_by_predicted_band: list[BandCoverage] = PydanticField(
        default_factory=list, description="The interval's coverage by predicted age band, in age order.")
    degraded: list[DegradedFigures] = PydanticField(
        default_factory=list, description="On degraded copies of the same photos, when measured.")

    @classmethod
    def of(cls, figures: dict | None) -> Figures | None:
        """From one model's entry of `python -m ml evaluate --json` (fields read by name, extra ones
        ignored); None when there are none."""
        if not figures or figures.get("mae") is None:
            return None
        coverage_by_band = figures.get("coverage_by_band") or {}
        cis = figures.get("coverage_ci_by_band") or {}
        bands = []
        for band, cells in sorted((figures.get("by_band") or {}).items(), key=lambda kv: _band_order(kv[0])):
            if cells[1] is None:
                continue
            bands.append(BandFigures(band=band, faces=cells[0], mae=cells[1],
                                     coverage=_share(coverage_by_band.get(band)), coverage_ci=_ci(cis.get(band))))
        degraded = [
            DegradedFigures(degradation=name, faces=d.get("n", 0), mae=d["mae"], coverage=d["coverage"],
                            coverage_ci=_ci(d.get("coverage_ci")), median_width=d.get("median_width"),
                            coverage_by_band=_coverage_list(d.get("coverage_by_band") or {},
                                                            d.get("coverage_ci_by_band") or {}))
            for name, d in (figures.get("degraded") or {}).items()
            if isinstance(d, dict) and d.get("mae") is not None and d.get("coverage") is not None]
        median_width = figures.get("median_width")
        return cls(faces=figures.get("faces", figures.get("n", 0)), mae=figures["mae"],
                   coverage=figures.get("coverage"), coverage_ci=_ci(figures.get("coverage_ci")),
                   median_width=median_width if isinstance(median_width, int | float) else None, by_band=bands,
                   coverage_by_predicted_band=_coverage_list(figures.get("coverage_by_predicted") or {},
                                                             figures.get("coverage_ci_by_predicted") or {}),
                   degraded=degraded)


class TrainedOn(BaseModel):
    data: list[str] = PydanticField(description="The labelled data sets, e.g. `utkface`.")
    submissions: int = PydanticField(description="Consented submissions it was trained on.")
    newest_submission: datetime | None = PydanticField(description="When the newest of them was made.")


class ModelEvaluation(BaseModel):
    validation: Figures | None = PydanticField(description="On the fixed validation split of the shared data.")
    held_out_submissions: Figures | None = PydanticField(
        description="On the submissions kept out of training (retrained models only).")


class ModelHistoryItem(BaseModel):
    version: str
    state: ModelState
    created_by: ModelCreator
    created_at: datetime
    activated_at: datetime | None
    mae: float | None = PydanticField(description="On the validation split, in years.")
    reason: str | None = PydanticField(description="Why it was rejected or retired.")


_MODEL_EXAMPLE_FIGURES = {"faces": 1991, "mae": 4.70, "coverage": 0.80, "by_band": [
    {"band": "0-12", "faces": 286, "mae": 1.92, "coverage": 0.83},
    {"band": "20-39", "faces": 963, "mae": 3.84, "coverage": 0.81}]}


class ModelRead(BaseModel):
    """The model that answers `/predict`: what it learnt from, how accurate it is, and its history."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "version": _VERSION, "state": "active", "created_by": "shipped", "created_at": "2026-12-06T01:30:00Z",
        "activated_at": "2026-12-06T01:30:00Z",
        "trained_on": {"data": ["utkface"], "submissions": 0, "newest_submission": None},
        "evaluation": {"validation": _MODEL_EXAMPLE_FIGURES, "held_out_submissions": None},
        "history": [{"version": _VERSION, "state": "active", "created_by": "shipped",
                     "created_at": "2026-12-06T01:30:00Z", "activated_at": "2026-12-06T01:30:00Z",
                     "mae": 4.70, "reason": None}]}]})

    version: str
    state: ModelState
    created_by: ModelCreator
    created_at: datetime
    activated_at: datetime | None
    trained_on: TrainedOn
    evaluation: ModelEvaluation
    history: list[ModelHistoryItem] = PydanticField(description="Every version, newest first.")

    @classmethod
    def of(cls, row: ModelVersion, versions: list[ModelVersion]) -> ModelRead:
        trained = row.trained_on
        return cls(
            version=row.version, state=row.state, created_by=row.created_by,  # type: ignore[arg-type]
            created_at=row.created_at, activated_at=row.activated_at,
            trained_on=TrainedOn(data=trained.get("data", []), submissions=trained.get("submissions", 0),
                                 newest_submission=trained.get("newest_submission")),
            evaluation=ModelEvaluation(validation=Figures.of(row.evaluation.get("validation")),
                                       held_out_submissions=Figures.of(row.evaluation.get("held_out"))),
            history=[ModelHistoryItem(
                version=v.version, state=v.state, created_by=v.created_by,  # type: ignore[arg-type]
                created_at=v.created_at, activated_at=v.activated_at, reason=v.reason,
                mae=(v.evaluation.get("validation") or {}).get("mae")) for v in versions],
        )


class ModelVersionRead(BaseModel):
    """A registry row as it is stored (admin)."""

    version: str
    state: ModelState
    reason: str | None
    weights_path: str = PydanticField(description="The .onnx file; relative paths are in the repository.")
    sha256: str
    parent_version: str | None
    created_by: ModelCreator
    created_at: datetime
    activated_at: datetime | None
    trained_on: dict = PydanticField(description="data, submissions, newest_submission, submission_ids, "
                                                 "held_out_submissions.")
    evaluation: dict = PydanticField(description="validation, held_out, active_validation, active_held_out "
                                                 "(figures as `python -m ml evaluate --json` writes them), rule.")

    @classmethod
    def of(cls, row: ModelVersion) -> ModelVersionRead:
        return cls.model_validate(row, from_attributes=True)


class ModelList(BaseModel):
    models: list[ModelVersionRead] = PydanticField(description="Newest first.")
