"""POST /detect: the faces in a photo, without ages."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, UploadFile

from api.deps import MetricsDep, MultipartDep, PredictorDep, SettingsDep, SlotsDep, read_upload
from api.errors import problem_responses
from api.models import DetectedFace, DetectResponse, ImageSize

router = APIRouter(tags=["faces"])

ImageFile = Annotated[UploadFile, File(description="A JPEG, PNG or WebP photo.")]
IMAGE_ERRORS = problem_responses(400, 413, 415, 422, 429, 503)


@router.post("/detect", dependencies=[MultipartDep], responses=IMAGE_ERRORS, summary="Find the faces in a photo")
async def detect_faces(image: ImageFile, settings: SettingsDep, predictor: PredictorDep,
                       slots: SlotsDep, metrics: MetricsDep) -> DetectResponse:
    """Boxes, scores and six keypoints per face, largest first, in pixels of the upright photo
    (EXIF orientation applied)."""
    data = await read_upload(image, settings)
    found = await slots.run(predictor.detect, data)
    metrics.observe_photo("detect", found)
    return DetectResponse(image=ImageSize(width=found.width, height=found.height),
                          faces=[DetectedFace.of(f) for f in found.faces])
