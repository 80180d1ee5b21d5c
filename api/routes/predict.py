"""POST /predict: the faces in a photo and the apparent age of each."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import MetricsDep, MultipartDep, PredictorDep, SettingsDep, SlotsDep, read_upload
from api.http.schemas import ImageSize, PredictedFace, PredictResponse
from api.routes.detect import IMAGE_ENCODING, IMAGE_ERRORS, ImageFile

router = APIRouter(tags=["faces"])


@router.post("/predict", dependencies=[MultipartDep], responses=IMAGE_ERRORS,
             summary="Estimate the age of each face in a photo", openapi_extra=IMAGE_ENCODING)
async def predict_ages(image: ImageFile, settings: SettingsDep, predictor: PredictorDep,
                       slots: SlotsDep, metrics: MetricsDep) -> PredictResponse:
    """Each face as `/detect` finds it, with its apparent `age` and an `age_interval` likely to hold
    it. A photo without a face is not an error: `faces` is empty. Nothing is stored."""
    data = await read_upload(image, settings)
    result = await slots.run(predictor.predict, data)
    metrics.observe_photo("predict", result)
    return PredictResponse(model_version=result.model_version,
                           image=ImageSize(width=result.width, height=result.height),
                           faces=[PredictedFace.of_age(f) for f in result.faces])
