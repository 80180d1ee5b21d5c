"""A range widened by a poor photo says why (`range_note`), in /predict and in a stored submission's answer."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.anyio

BLURRED = "the photo is blurred"


def upload(data: bytes) -> dict:
    return {"image": ("photo.png", data, "image/png")}


def width(face: dict) -> float:
    low, high = face["age_interval"]
    return high - low


async def test_a_blurred_face_says_why_its_range_is_wider_and_a_sharp_one_does_not(
    client, astronaut_png, blurred_astronaut_png
):
    sharp = (await client.post("/predict", files=upload(astronaut_png))).json()
    soft = (await client.post("/predict", files=upload(blurred_astronaut_png))).json()
    [sharp_face], [soft_face] = sharp["faces"], soft["faces"]
    assert soft["set_aside"] == []  # blurred enough to widen the range, not enough to be set aside
    assert sharp_face["range_note"] is None
    assert soft_face["range_note"] == BLURRED
    assert width(soft_face) > width(sharp_face)


async def test_a_stored_submission_of_a_blurred_face_carries_the_note(client, blurred_astronaut_png):
    response = await client.post(
        "/submissions",
        data={"first_name": "Eileen", "true_age": "42", "consent": "true"},
        files=upload(blurred_astronaut_png),
    )
    assert response.status_code == 201
    assert response.json()["face"]["range_note"] == BLURRED
