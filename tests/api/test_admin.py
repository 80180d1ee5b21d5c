"""Reading and deleting submissions: admin bearer token, or the submitter's deletion token."""

from __future__ import annotations

import io
import uuid

import pytest
from PIL import Image

from api.deps import get_settings
from tests.api.conftest import ADMIN_TOKEN, assert_problem, create_submission

pytestmark = pytest.mark.anyio


ADMIN_ROUTES = ["/submissions", "/submissions/{id}", "/submissions/{id}/image"]


@pytest.mark.parametrize("route", ADMIN_ROUTES)
async def test_admin_routes_without_a_token_answer_401(client, face_png, route):
    sub = await create_submission(client, face_png)
    response = await client.get(route.format(id=sub["id"]))
    assert_problem(response, 401, "not_authenticated")
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("route", ADMIN_ROUTES)
@pytest.mark.parametrize("authorization", [f"Bearer {ADMIN_TOKEN}x", "Bearer wrong", f"Bearer {ADMIN_TOKEN[:-1]}",
                                           "Bearer \u00e9t\u00e9"])
async def test_admin_routes_with_a_wrong_token_answer_401(client, face_png, route, authorization):
    sub = await create_submission(client, face_png)
    response = await client.get(route.format(id=sub["id"]), headers={"Authorization": authorization.encode()})
    assert_problem(response, 401, "invalid_token")


async def test_a_token_in_another_scheme_is_not_accepted(client):
    response = await client.get("/submissions", headers={"Authorization": f"Basic {ADMIN_TOKEN}"})
    assert_problem(response, 401, "not_authenticated")


@pytest.mark.parametrize("route", ADMIN_ROUTES)
async def test_admin_routes_answer_403_when_no_admin_token_is_configured(client, app, settings, face_png, admin,
                                                                        route):
    sub = await create_submission(client, face_png)
    for token in (None, ""):
        app.dependency_overrides[get_settings] = lambda t=token: settings.model_copy(update={"admin_token": t})
        for headers in ({}, admin, {"Authorization": "Bearer "}):
            assert_problem(await client.get(route.format(id=sub["id"]), headers=headers), 403, "admin_disabled")


async def test_listing_is_newest_first_paginated_and_without_image_bytes(client, face_png, admin):
    ids = [(await create_submission(client, face_png, first_name=name))["id"] for name in ("Ada", "Bea", "Cleo")]
    first = await client.get("/submissions", params={"limit": 2}, headers=admin)
    assert first.status_code == 200
    page = first.json()
    assert (page["total"], page["limit"], page["offset"]) == (3, 2, 0)
    assert [item["id"] for item in page["items"]] == ids[::-1][:2]
    rest = (await client.get("/submissions", params={"limit": 2, "offset": 2}, headers=admin)).json()
    assert [item["id"] for item in rest["items"]] == ids[:1]
    item = page["items"][0]
    assert set(item) == {"id", "created_at", "first_name", "true_age", "predicted_age", "error", "face",
                         "model_version", "image"}
    assert item["image"] == {"filename": "me.png", "content_type": "image/jpeg", "width": 512, "height": 512,
                             "url": f"/submissions/{item['id']}/image"}
    assert len(first.content) < 4000  # no photo in there


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 101}, {"offset": -1}, {"limit": "x"}])
async def test_listing_rejects_bad_pagination(client, admin, params):
    assert_problem(await client.get("/submissions", params=params, headers=admin), 422, "validation_error")


async def test_admin_reads_one_submission(client, face_png, admin):
    sub = await create_submission(client, face_png, true_age=37)
    response = await client.get(f"/submissions/{sub['id']}", headers=admin)
    assert response.status_code == 200
    body = response.json()
    assert (body["id"], body["true_age"], body["predicted_age"]) == (sub["id"], 37, sub["predicted_age"])
    assert body["face"]["box"] == sub["face"]["box"]
    assert "deletion_token" not in body


async def test_image_endpoint_serves_the_reencoded_jpeg(client, face_png, admin):
    sub = await create_submission(client, face_png)
    response = await client.get(f"/submissions/{sub['id']}/image", headers=admin)
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/jpeg"
    assert response.headers["cache-control"] == "private, no-store"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.content != face_png
    image = Image.open(io.BytesIO(response.content))
    assert image.format == "JPEG" and image.size == (512, 512)


@pytest.mark.parametrize("route", ADMIN_ROUTES[1:])
async def test_unknown_submission_is_404_and_a_malformed_id_422(client, admin, route):
    assert_problem(await client.get(route.format(id=uuid.uuid4()), headers=admin), 404, "not_found")
    response = await client.get(route.format(id="not-a-uuid-qq"), headers=admin)
    body = assert_problem(response, 422, "validation_error")
    assert body["errors"] == [{"field": "submission_id", "code": "uuid_parsing",
                               "message": "Input should be a valid UUID"}]
    assert "qq" not in response.text and "`" not in response.text


async def test_submitter_deletes_with_their_token_then_it_is_gone(client, face_png, admin):
    sub = await create_submission(client, face_png)
    url = f"/submissions/{sub['id']}"
    response = await client.delete(url, headers={"X-Deletion-Token": sub["deletion_token"]})
    assert response.status_code == 204 and response.content == b""
    assert_problem(await client.get(url, headers=admin), 404, "not_found")
    assert_problem(await client.get(f"{url}/image", headers=admin), 404, "not_found")
    again = await client.delete(url, headers={"X-Deletion-Token": sub["deletion_token"]})
    assert_problem(again, 403, "invalid_deletion_token")  # a token never tells whether something exists


async def test_a_deletion_token_for_no_submission_is_403_not_404(client):
    response = await client.delete("/submissions/0b6f6d3e-5d5e-4f8e-9a53-2d1f3c9a7b10",
                                   headers={"X-Deletion-Token": "x" * 43})
    assert_problem(response, 403, "invalid_deletion_token")


@pytest.mark.parametrize("token", ["wrong", "", "x" * 43, "\u00e9"])
async def test_a_wrong_deletion_token_deletes_nothing(client, face_png, admin, token):
    sub = await create_submission(client, face_png)
    response = await client.delete(f"/submissions/{sub['id']}", headers={"X-Deletion-Token": token.encode()})
    assert_problem(response, 403, "invalid_deletion_token")
    assert (await client.get(f"/submissions/{sub['id']}", headers=admin)).status_code == 200


async def test_a_deletion_token_only_works_for_its_own_submission(client, face_png, admin):
    mine, theirs = await create_submission(client, face_png), await create_submission(client, face_png)
    response = await client.delete(f"/submissions/{theirs['id']}", headers={"X-Deletion-Token": mine["deletion_token"]})
    assert_problem(response, 403, "invalid_deletion_token")


async def test_admin_deletes_any_submission(client, face_png, admin):
    sub = await create_submission(client, face_png)
    assert (await client.delete(f"/submissions/{sub['id']}", headers=admin)).status_code == 204
    assert_problem(await client.delete(f"/submissions/{sub['id']}", headers=admin), 404, "not_found")


async def test_deleting_without_any_token_is_refused(client, face_png, app, settings):
    sub = await create_submission(client, face_png)
    assert_problem(await client.delete(f"/submissions/{sub['id']}"), 401, "not_authenticated")
    bad = {"Authorization": "Bearer wrong"}
    assert_problem(await client.delete(f"/submissions/{sub['id']}", headers=bad), 401, "invalid_token")
    app.dependency_overrides[get_settings] = lambda: settings.model_copy(update={"admin_token": None})
    assert_problem(await client.delete(f"/submissions/{sub['id']}"), 403, "admin_disabled")
    # ... while the submitter's own token still works without an admin token configured
    ok = await client.delete(f"/submissions/{sub['id']}", headers={"X-Deletion-Token": sub["deletion_token"]})
    assert ok.status_code == 204
