"""POST /detect: the faces in a photo, without ages."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, UploadFile

from api.core.errors import problem_responses
from api.deps import MetricsDep, MultipartDep, PredictorDep, SettingsDep, SlotsDep, read_upload
from api.http.schemas import DetectedFace, DetectResponse, ImageSize

router = APIRouter(tags=["faces"])

# minLength: an empty file is refused (422 `empty_file`). The part's declared type is only documented:
# the photo is judged by its bytes.
ImageFile = Annotated[UploadFile, File(description="A JPEG, PNG or WebP photo.", json_schema_extra={"minLength": 1})]
IMAGE_ERRORS = problem_responses(400, 413, 415, 422, 429, 503)
IMAGE_ENCODING = {"requestBody": {"content": {"multipart/form-data": {
    "encoding": {"image": {"contentType": "image/jpeg, image/png, image/webp"}}}}}}


@router.post("/detect", dependencies=[MultipartDep], responses=IMAGE_ERRORS, summary="Find the faces in a photo",
             openapi_extra=IMAGE_ENCODING)
async def detect_faces(image: ImageFile, settings: SettingsDep, predictor: PredictorDep,
                       slots: SlotsDep, metrics: MetricsDep) -> DetectResponse:
    """Boxes, scores and six keypoints per face, largest first, in pixels of the upright photo
    (EXIF orientation applied)."""
    data = await read_upload(image, settings)
    found = await slots.run(predictor.detect, data)
    metrics.observe_photo("detect", found)
    return DetectResponse(image=ImageSize(width=found.width, height=found.height),
                          faces=[DetectedFace.of(f) for f in found.faces])
