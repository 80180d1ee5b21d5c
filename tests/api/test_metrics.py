"""GET /metrics after real requests: requests by route template and status, the stages of the work,
faces and ages, submissions stored and deleted; and nothing personal in it.

The app (and so its registry) is shared by the test run, so each test compares before and after."""

from __future__ import annotations

import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from api.deps import get_settings
from tests.api.conftest import ADMIN_TOKEN, assert_problem

pytestmark = pytest.mark.anyio


async def scrape(client) -> dict[tuple[str, frozenset], float]:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(response.text) for s in family.samples}


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_a_prediction_shows_in_requests_stages_faces_and_ages(client, face_png):
    before = await scrape(client)
    response = await client.post("/predict", files={"image": ("a.png", face_png, "image/png")})
    assert response.status_code == 200 and len(response.json()["faces"]) == 1
    after = await scrape(client)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    route = {"method": "POST", "route": "/predict", "status": "200"}
    assert grew("whatsmyage_http_requests_total", **route) == 1
    assert grew("whatsmyage_http_request_duration_seconds_count", **route) == 1
    assert grew("whatsmyage_http_request_duration_seconds_bucket", **route, le="+Inf") == 1
    for stage in ("decode", "detect", "align", "gate", "age"):
        assert grew("whatsmyage_stage_seconds_count", stage=stage) == 1, stage
        assert grew("whatsmyage_stage_seconds_sum", stage=stage) > 0, stage
    assert grew("whatsmyage_faces_per_photo_count", endpoint="predict") == 1
    assert grew("whatsmyage_faces_per_photo_bucket", endpoint="predict", le="0.0") == 0
    assert grew("whatsmyage_faces_per_photo_bucket", endpoint="predict", le="1.0") == 1
    age = response.json()["faces"][0]["age"]
    assert grew("whatsmyage_predicted_age_years_count") == 1
    assert grew("whatsmyage_predicted_age_years_sum") == pytest.approx(age)


async def test_detection_counts_faces_and_its_two_stages_but_no_age(client, face_png, noface_png):
    before = await scrape(client)
    for photo in (face_png, noface_png):
        assert (await client.post("/detect", files={"image": ("a.png", photo, "image/png")})).status_code == 200
    after = await scrape(client)
    assert value(after, "whatsmyage_faces_per_photo_count", endpoint="detect") - value(
        before, "whatsmyage_faces_per_photo_count", endpoint="detect") == 2
    assert value(after, "whatsmyage_faces_per_photo_bucket", endpoint="detect", le="0.0") - value(
        before, "whatsmyage_faces_per_photo_bucket", endpoint="detect", le="0.0") == 1
    assert value(after, "whatsmyage_stage_seconds_count", stage="detect") - value(
        before, "whatsmyage_stage_seconds_count", stage="detect") == 2
    assert value(after, "whatsmyage_stage_seconds_count", stage="age") == value(
        before, "whatsmyage_stage_seconds_count", stage="age")
    assert value(after, "whatsmyage_predicted_age_years_count") == value(before, "whatsmyage_predicted_age_years_count")


async def test_a_submission_counts_as_stored_and_its_deletion_as_deleted_and_neither_leaks(client, face_png):
    before = await scrape(client)
    created = await client.post("/submissions", files={"image": ("Zebulon.png", face_png, "image/png")},
                                data={"first_name": "Zebulon", "true_age": "42", "consent": "true"})
    assert created.status_code == 201
    body = created.json()
    middle = await scrape(client)
    assert value(middle, "whatsmyage_submissions_stored_total") - value(
        before, "whatsmyage_submissions_stored_total") == 1
    # the photo went through every stage too, decode included (done apart from the prediction there)
    for stage in ("decode", "detect", "align", "gate", "age"):
        assert value(middle, "whatsmyage_stage_seconds_count", stage=stage) - value(
            before, "whatsmyage_stage_seconds_count", stage=stage) == 1, stage

    deleted = await client.delete(f"/submissions/{body['id']}", headers={"X-Deletion-Token": body["deletion_token"]})
    assert deleted.status_code == 204
    after = await scrape(client)
    assert value(after, "whatsmyage_submissions_deleted_total", by="owner") - value(
        before, "whatsmyage_submissions_deleted_total", by="owner") == 1
    route = {"method": "DELETE", "route": "/submissions/{submission_id}", "status": "204"}
    assert value(after, "whatsmyage_http_requests_total", **route) - value(
        before, "whatsmyage_http_requests_total", **route) == 1

    text = (await client.get("/metrics")).text
    for secret in ("Zebulon", body["deletion_token"], body["id"], ADMIN_TOKEN):
        assert secret not in text


async def test_refused_submissions_count_as_requests_but_not_as_stored(client, face_png, admin):
    before = await scrape(client)
    response = await client.post("/submissions", data={"first_name": "Eileen", "true_age": "42"},
                                 files={"image": ("a.png", face_png, "image/png")})
    assert_problem(response, 422, "consent_required")
    missing = await client.delete(f"/submissions/{uuid.uuid4()}", headers=admin)
    assert_problem(missing, 404, "not_found")
    after = await scrape(client)
    assert value(after, "whatsmyage_submissions_stored_total") == value(before, "whatsmyage_submissions_stored_total")
    assert value(after, "whatsmyage_submissions_deleted_total", by="admin") == value(
        before, "whatsmyage_submissions_deleted_total", by="admin")
    assert value(after, "whatsmyage_http_requests_total", method="POST", route="/submissions", status="422") - value(
        before, "whatsmyage_http_requests_total", method="POST", route="/submissions", status="422") == 1


async def test_labels_hold_route_templates_never_raw_paths_or_query_strings(client, admin):
    some_id = uuid.uuid4()
    await client.get(f"/submissions/{some_id}", headers=admin)
    await client.get("/submissions?limit=5&offset=0&secret=hunter2", headers=admin)
    await client.get(f"/no/such/{some_id}")
    text = (await client.get("/metrics")).text
    assert str(some_id) not in text and "hunter2" not in text and "/no/such" not in text
    samples = await scrape(client)
    routes = {dict(labels).get("route") for name, labels in samples if name == "whatsmyage_http_requests_total"}
    assert {"/submissions/{submission_id}", "/submissions", "unmatched"} <= routes
    assert all(r == "unmatched" or r == "frontend" or r.startswith("/") for r in routes)


async def test_metrics_need_the_metrics_token_when_one_is_set(app, client, settings):
    token = "metrics-token-0123456789abcdef0123456789"
    app.dependency_overrides[get_settings] = lambda: settings.model_copy(update={"metrics_token": SecretStr(token)})
    assert_problem(await client.get("/metrics"), 401, "not_authenticated")
    assert_problem(await client.get("/metrics", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}),
                   401, "invalid_token")
    allowed = await client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert allowed.status_code == 200 and "whatsmyage_http_requests_total" in allowed.text
    assert token not in allowed.text


async def test_metrics_are_open_without_a_token_and_not_in_the_openapi_schema(client, settings):
    assert settings.metrics_token_value is None
    assert (await client.get("/metrics")).status_code == 200
    assert "/metrics" not in (await client.get("/openapi.json")).json()["paths"]
