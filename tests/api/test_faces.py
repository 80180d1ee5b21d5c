"""POST /detect and POST /predict: faces and ages, nothing stored."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from tests import badimages as b
from tests.api.conftest import FIXTURES, SHIPPED_VERSION, assert_problem

pytestmark = pytest.mark.anyio


def upload(data: bytes, name: str = "photo.png", ctype: str = "image/png") -> dict:
    return {"image": (name, data, ctype)}


async def test_predict_gives_one_aged_face_for_the_astronaut(client, face_png):
    response = await client.post("/predict", files=upload(face_png))
    assert response.status_code == 200
    body = response.json()
    assert body["image"] == {"width": 512, "height": 512}
    [face] = body["faces"]
    assert set(face) == {"box", "score", "keypoints", "quality", "age", "age_interval", "range_note"}
    assert set(face["box"]) == {"x", "y", "width", "height"}
    assert 0.5 <= face["quality"] <= 1  # a sharp, large, frontal face
    assert body["set_aside"] == [] and body["set_aside_count"] == 0
    assert face["range_note"] is None  # nothing in this photo widens the range
    assert len(face["keypoints"]) == 6 and set(face["keypoints"][0]) == {"x", "y"}
    low, high = face["age_interval"]
    assert 25 <= face["age"] <= 60 and low < face["age"] < high
    assert 0 < face["score"] <= 1


async def test_predict_reports_the_predictors_model_version(client, face_png):
    health = (await client.get("/healthz")).json()
    response = await client.post("/predict", files=upload(face_png))
    assert response.json()["model_version"] == health["model_version"] == SHIPPED_VERSION


async def test_predict_without_a_face_is_not_an_error(client, noface_png):
    response = await client.post("/predict", files=upload(noface_png))
    assert response.status_code == 200
    assert response.json()["faces"] == [] and response.json()["set_aside_count"] == 0


async def test_detect_finds_faces_without_ages(client, face_png):
    response = await client.post("/detect", files=upload(face_png))
    assert response.status_code == 200
    body = response.json()
    assert "model_version" not in body
    [face] = body["faces"]
    assert set(face) == {"box", "score", "keypoints", "quality"}
    assert body["set_aside"] == [] and body["set_aside_count"] == 0


async def test_detect_finds_several_faces_largest_first(client):
    data = b.encode(_three_faces(), "JPEG", quality=92)
    response = await client.post("/detect", files=upload(data, "group.jpg", "image/jpeg"))
    faces = response.json()["faces"]
    assert len(faces) == 3
    areas = [f["box"]["width"] * f["box"]["height"] for f in faces]
    assert areas == sorted(areas, reverse=True)


async def test_boxes_are_in_upright_pixels_of_an_exif_rotated_photo(client, face_png):
    upright = Image.open(io.BytesIO(face_png)).convert("RGB").crop((0, 0, 512, 384))
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated = b.encode(upright.transpose(Image.Transpose.ROTATE_90), "JPEG", quality=95, exif=exif.tobytes())
    response = await client.post("/detect", files=upload(rotated, "r.jpg", "image/jpeg"))
    assert response.json()["image"] == {"width": 512, "height": 384}


@pytest.mark.parametrize(("data", "status", "code"), [
    (b"", 422, "empty_file"),
    (b.astronaut_jpeg()[: len(b.astronaut_jpeg()) * 6 // 10], 422, "corrupt_image"),
    (b.JPEG_HEADER_ONLY, 415, "unsupported_image"),
    (b.SVG, 415, "unsupported_image"),
    (b.gif_animated(), 415, "unsupported_image"),
    (b.png_header_only(20000, 20000), 413, "image_too_many_pixels"),
], ids=["empty", "truncated", "jpeg-header-only", "svg", "gif", "png-bomb"])
@pytest.mark.parametrize("path", ["/detect", "/predict"])
async def test_unusable_photos_get_their_error_code(client, path, data, status, code):
    assert_problem(await client.post(path, files=upload(data)), status, code)


async def test_missing_image_field_is_a_validation_error(client):
    body = assert_problem(await client.post("/predict", files={"other": (None, "x")}), 422, "validation_error")
    assert body["errors"] == [{"field": "image", "code": "missing", "message": "Field required"}]


async def test_photo_over_the_upload_limit_is_refused(client, app, settings):
    from api.deps import get_settings

    app.dependency_overrides[get_settings] = lambda: settings.model_copy(update={"max_upload_bytes": 1000})
    response = await client.post("/predict", files=upload((FIXTURES / "astronaut.png").read_bytes()))
    assert_problem(response, 413, "file_too_large")


def _three_faces() -> Image.Image:
    face = Image.open(FIXTURES / "astronaut.png").convert("RGB")
    canvas = Image.new("RGB", (1000, 420), (200, 200, 200))
    x = 0
    for side in (400, 300, 240):
        canvas.paste(face.resize((side, side)), (x, 0))
        x += side + 10
    return canvas
