"""POST /submissions: consent, validation, the server-side prediction, what is (and is not) stored."""

from __future__ import annotations

import hashlib
import io
import uuid

import pytest
from PIL import Image
from sqlmodel import func, select

from api.routes.submissions import clean_filename
from api.storage.tables import Submission
from tests import badimages as b
from tests.api.conftest import SHIPPED_VERSION, assert_problem

pytestmark = pytest.mark.anyio

FORM = {"first_name": "Eileen", "true_age": "42", "consent": "true"}


def submit(client, image: bytes, *, name: str = "me.png", ctype: str = "image/png", **fields: str):
    return client.post("/submissions", data={**FORM, **fields}, files={"image": (name, image, ctype)})


async def count(session) -> int:
    return (await session.exec(select(func.count()).select_from(Submission))).one()


async def test_submission_with_consent_is_stored_and_answered_201(client, session, face_png):
    response = await submit(client, face_png)
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == {"id", "first_name", "true_age", "predicted_age", "error", "face", "image",
                         "model_version", "created_at", "deletion_token"}
    assert body["first_name"] == "Eileen" and body["true_age"] == 42
    assert 25 <= body["predicted_age"] <= 60
    assert body["error"] == pytest.approx(body["predicted_age"] - 42)
    assert body["face"]["age"] == body["predicted_age"]
    assert body["model_version"] == SHIPPED_VERSION
    row = await session.get(Submission, uuid.UUID(body["id"]))
    assert row is not None and row.predicted_age == body["predicted_age"]
    assert row.deletion_token_hash == hashlib.sha256(body["deletion_token"].encode()).digest()
    assert body["deletion_token"].encode() not in row.deletion_token_hash
    assert (row.face_width, row.img_width, row.img_height) == (body["face"]["box"]["width"], 512, 512)


@pytest.mark.parametrize("consent", ["true", "on", "yes", "1", "TRUE"])
async def test_consent_accepts_the_usual_true_values(client, face_png, consent):
    assert (await submit(client, face_png, consent=consent)).status_code == 201


@pytest.mark.parametrize("consent", [None, "", "false", "off", "no", "0"])
async def test_submission_without_consent_is_rejected_and_nothing_stored(client, session, face_png, consent):
    fields = {"first_name": "Eileen", "true_age": "42"} | ({"consent": consent} if consent is not None else {})
    response = await client.post("/submissions", data=fields, files={"image": ("me.png", face_png, "image/png")})
    assert_problem(response, 422, "consent_required")
    assert await count(session) == 0


@pytest.mark.parametrize("consent", ["2", "maybe", "true ", "null"])
async def test_consent_that_is_neither_true_nor_false_is_a_validation_error(client, face_png, consent):
    body = assert_problem(await submit(client, face_png, consent=consent), 422, "validation_error")
    assert [e["field"] for e in body["errors"]] == ["consent"]


async def test_photo_without_a_face_is_rejected_and_nothing_stored(client, session, noface_png):
    assert_problem(await submit(client, noface_png), 422, "no_face_detected")
    assert await count(session) == 0


async def test_prediction_is_made_on_the_largest_face(client, face_png):
    face = Image.open(io.BytesIO(face_png)).convert("RGB")
    canvas = Image.new("RGB", (900, 420), (200, 200, 200))
    canvas.paste(face.resize((240, 240)), (0, 0))
    canvas.paste(face.resize((400, 400)), (480, 0))
    response = await submit(client, b.encode(canvas, "JPEG", quality=92), name="two.jpg", ctype="image/jpeg")
    assert response.status_code == 201
    assert response.json()["face"]["box"]["x"] > 450  # the big one, on the right


async def test_a_predicted_age_sent_by_the_client_is_ignored(client, face_png):
    response = await submit(client, face_png, predicted_age="3", age="3")
    assert response.status_code == 201
    assert response.json()["predicted_age"] > 20


@pytest.mark.parametrize(("name", "stored"), [
    ("  Eileen  ", "Eileen"),
    ("Jean-Luc", "Jean-Luc"),
    ("O'Brien", "O'Brien"),
    ("Zoë", "Zoë"),
    ("Zoe\u0308", "Zoë"),  # NFC
    ("Mary   Ann", "Mary Ann"),
    ("Łucja", "Łucja"),
    ("美咲", "美咲"),
    ("<script>", None),
])
async def test_first_name_is_trimmed_and_normalised(client, session, face_png, name, stored):
    response = await submit(client, face_png, first_name=name)
    if stored is None:
        assert_problem(response, 422, "validation_error")
        return
    assert response.status_code == 201, response.text
    assert response.json()["first_name"] == stored
    row = await session.get(Submission, uuid.UUID(response.json()["id"]))
    assert row is not None and row.first_name == stored


@pytest.mark.parametrize(("name", "code"), [
    ("", "missing"),
    ("   ", "string_too_short"),
    ("E", "string_too_short"),
    ("E" * 65, "string_too_long"),
    ("Eil\x00een", "invalid_characters"),
    ("Eileen\r\n", "invalid_characters"),
    ("Eil\teen", "invalid_characters"),
    ("Eil\u202eeen", "invalid_characters"),  # right-to-left override
    ("Eileen2", "invalid_characters"),
    ("Eileen!", "invalid_characters"),
])
async def test_invalid_first_names_are_rejected(client, session, face_png, name, code):
    body = assert_problem(await submit(client, face_png, first_name=name), 422, "validation_error")
    assert body["errors"] == [{"field": "first_name", "code": code, "message": body["errors"][0]["message"]}]
    assert await count(session) == 0


@pytest.mark.parametrize(("age", "stored"), [("0", 0), ("120", 120), ("042", 42)])
async def test_true_age_accepts_digits_from_0_to_120(client, face_png, age, stored):
    response = await submit(client, face_png, true_age=age)
    assert response.status_code == 201 and response.json()["true_age"] == stored


@pytest.mark.parametrize(("age", "code"), [
    ("-1", "int_parsing"), ("121", "less_than_equal"), ("999", "less_than_equal"), ("12.5", "int_parsing"),
    ("12.0", "int_parsing"), (" 42 ", "int_parsing"), ("+42", "int_parsing"), ("1e2", "int_parsing"),
    ("0x20", "int_parsing"), ("４２", "int_parsing"), ("abc", "int_parsing"), ("1" * 25, "int_parsing"),
    ("", "missing"),
])
async def test_true_age_must_be_plain_digits_in_range(client, face_png, age, code):
    body = assert_problem(await submit(client, face_png, true_age=age), 422, "validation_error")
    assert [(e["field"], e["code"]) for e in body["errors"]] == [("true_age", code)]


async def test_validation_errors_name_the_field_but_never_echo_the_input(client, face_png):
    response = await submit(client, face_png, first_name="xyzzy<b>\x00", true_age="plugh99", consent="frobozz")
    body = assert_problem(response, 422, "validation_error")
    assert {e["field"] for e in body["errors"]} == {"first_name", "true_age", "consent"}
    for secret in ("xyzzy", "plugh", "frobozz"):
        assert secret not in response.text


async def test_stored_photo_is_reencoded_without_exif_or_appended_data(client, session, face_png):
    exif = Image.Exif()
    exif[0x010F] = "SecretCam"  # Make
    exif[0x8825] = {2: (48.0, 51.0, 24.0)}  # GPSInfo: latitude
    photo = Image.open(io.BytesIO(face_png)).convert("RGB")
    upload = b.encode(photo, "JPEG", quality=95, exif=exif.tobytes()) + b"<html>trailer</html>PK\x03\x04"
    response = await submit(client, upload, name="me.jpg", ctype="image/jpeg")
    assert response.status_code == 201
    row = await session.get(Submission, uuid.UUID(response.json()["id"]))
    assert row is not None and row.img_data != upload
    assert row.img_data.startswith(b"\xff\xd8") and row.img_data.endswith(b"\xff\xd9")
    assert b"SecretCam" not in row.img_data and b"trailer" not in row.img_data
    stored = Image.open(io.BytesIO(row.img_data))
    assert stored.format == "JPEG" and len(stored.getexif()) == 0
    assert row.img_content_type == "image/jpeg"


async def test_large_photos_are_stored_reduced_with_the_box_in_stored_pixels(client, session, face_png):
    big = Image.open(io.BytesIO(face_png)).convert("RGB").resize((2560, 2560))
    response = await submit(client, b.encode(big, "JPEG", quality=90), name="big.jpg", ctype="image/jpeg")
    body = response.json()
    row = await session.get(Submission, uuid.UUID(body["id"]))
    assert row is not None
    stored = Image.open(io.BytesIO(row.img_data))
    assert stored.size == (row.img_width, row.img_height) == (body["image"]["width"], body["image"]["height"])
    assert stored.width < 2560
    assert row.face_x + row.face_width <= stored.width and 60 < row.face_width < 220 * stored.width / 512


@pytest.mark.parametrize(("filename", "stored"), [
    ("../../etc/passwd", "passwd"),
    ("C:\\Users\\me\\photo.jpg", "photo.jpg"),
    ("a" * 300 + ".jpg", "a" * 251 + ".jpg"),
])
async def test_client_file_name_is_cleaned_and_never_a_path(client, session, face_png, filename, stored):
    response = await submit(client, face_png, name=filename)
    assert response.status_code == 201, response.text
    row = await session.get(Submission, uuid.UUID(response.json()["id"]))
    assert row is not None and row.img_filename == stored


@pytest.mark.parametrize(("filename", "stored"), [
    ("x.php\x00.jpg", "x.php.jpg"),
    ("\u202egpj.exe", "gpj.exe"),
    ("line\r\nbreak.jpg", "linebreak.jpg"),
    ("  spaced name.png ", "spaced name.png"),
    ("", "photo"),
    (None, "photo"),
])
def test_file_names_lose_control_and_format_characters(filename, stored):
    assert clean_filename(filename) == stored
