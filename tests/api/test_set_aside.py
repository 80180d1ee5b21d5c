"""Faces set aside by the quality gate (ml/serving/gate.py): listed with their reason, never aged, never stored."""

from __future__ import annotations

import pytest
from sqlmodel import func, select

from api.storage.tables import Submission
from tests.api.conftest import FIXTURES, assert_problem

pytestmark = pytest.mark.anyio

REASONS = {"not_a_face", "too_blurred", "too_small"}


def upload(data: bytes, name: str = "photo.jpg", ctype: str = "image/jpeg") -> dict:
    return {"image": (name, data, ctype)}


async def test_a_dog_gets_no_age(client):
    response = await client.post("/predict", files=upload((FIXTURES / "dog.jpg").read_bytes()))
    assert response.status_code == 200
    body = response.json()
    assert body["faces"] == []
    # the detector does take the dog's face for one: the gate sets it aside and says so
    assert body["set_aside_count"] == len(body["set_aside"]) >= 1
    assert {s["reason"] for s in body["set_aside"]} <= REASONS
    assert all("age" not in s for s in body["set_aside"])


async def test_a_blurred_face_behind_a_sharp_one_is_set_aside_with_its_reason(client):
    data = (FIXTURES / "blurred_background.jpg").read_bytes()
    for path in ("/predict", "/detect"):
        body = (await client.post(path, files=upload(data))).json()
        [face] = body["faces"]
        [aside] = body["set_aside"]
        assert body["set_aside_count"] == 1
        assert aside["reason"] == "too_blurred"
        assert set(aside) == {"box", "score", "reason", "quality"}
        assert aside["quality"] < face["quality"] <= 1
        assert aside["box"]["x"] < face["box"]["x"]  # the blurred face is the one top left


async def test_a_photo_whose_only_face_is_set_aside_is_refused_and_nothing_stored(client, session):
    data = (FIXTURES / "dog.jpg").read_bytes()
    response = await client.post(
        "/submissions", data={"first_name": "Rex", "true_age": "5", "consent": "true"}, files=upload(data)
    )
    body = assert_problem(response, 422, "no_face_worth_an_age")
    assert set(body["reasons"]) <= REASONS and body["reasons"]
    assert (await session.exec(select(func.count()).select_from(Submission))).one() == 0
