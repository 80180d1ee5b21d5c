"""Self-service access: with their X-Deletion-Token a submitter reads their own submission and its
stored photo exactly as an admin sees them; and nothing that carries a photo or personal data may be
cached or leak a token or name into logs, metrics, errors or export file names."""

from __future__ import annotations

import io
import json
import logging
from functools import partial

import pytest
from PIL import Image

from api.core.logs import JsonFormatter
from api.learning.submission_export import export_submissions
from tests.api.conftest import ADMIN_TOKEN, assert_problem, create_submission

pytestmark = pytest.mark.anyio


# A name and a file name to look for where they must not be.
create = partial(create_submission, first_name="Zebulon", filename="zebulon.png")


async def test_the_owner_sees_exactly_what_the_admin_sees(client, face_png, admin):
    sub = await create(client, face_png)
    owner = {"X-Deletion-Token": sub["deletion_token"]}
    url = f"/submissions/{sub['id']}"
    as_owner, as_admin = await client.get(url, headers=owner), await client.get(url, headers=admin)
    assert as_owner.status_code == as_admin.status_code == 200
    assert as_owner.json() == as_admin.json()
    assert as_owner.json()["first_name"] == "Zebulon" and as_owner.json()["image"]["url"] == f"{url}/image"
    assert "deletion_token" not in as_owner.json()

    photo_owner, photo_admin = await client.get(f"{url}/image", headers=owner), await client.get(f"{url}/image",
                                                                                                 headers=admin)
    assert photo_owner.status_code == photo_admin.status_code == 200
    assert photo_owner.content == photo_admin.content != face_png  # the stored, re-encoded JPEG
    assert Image.open(io.BytesIO(photo_owner.content)).format == "JPEG"
    for name in ("content-type", "cache-control", "content-disposition", "x-content-type-options"):
        assert photo_owner.headers[name] == photo_admin.headers[name], name
    assert photo_owner.headers["cache-control"] == "private, no-store"


async def test_the_owner_token_opens_only_its_own_submission(client, face_png, admin):
    mine, theirs = await create(client, face_png), await create(client, face_png)
    for path in ("", "/image"):
        response = await client.get(f"/submissions/{theirs['id']}{path}",
                                    headers={"X-Deletion-Token": mine["deletion_token"]})
        body = assert_problem(response, 403, "invalid_deletion_token")
        assert mine["deletion_token"] not in response.text and "Zebulon" not in response.text
        assert body["detail"] == "The deletion token does not match this submission."


@pytest.mark.parametrize("token", ["wrong", "", "x" * 43, "\u00e9"])
async def test_a_wrong_token_reads_nothing(client, face_png, token):
    sub = await create(client, face_png)
    for path in ("", "/image"):
        response = await client.get(f"/submissions/{sub['id']}{path}", headers={"X-Deletion-Token": token.encode()})
        assert_problem(response, 403, "invalid_deletion_token")
        assert "Zebulon" not in response.text


async def test_after_withdrawal_the_owner_finds_nothing(client, face_png):
    sub = await create(client, face_png)
    owner = {"X-Deletion-Token": sub["deletion_token"]}
    url = f"/submissions/{sub['id']}"
    assert (await client.delete(url, headers=owner)).status_code == 204
    for path in ("", "/image"):  # the token matches no stored submission now: a token never tells what exists
        assert_problem(await client.get(url + path, headers=owner), 403, "invalid_deletion_token")


async def test_a_token_without_a_submission_id_lists_nothing(client, face_png):
    sub = await create(client, face_png)
    response = await client.get("/submissions", headers={"X-Deletion-Token": sub["deletion_token"]})
    assert_problem(response, 401, "not_authenticated")  # the listing is the admin's only


async def test_the_openapi_document_offers_the_deletion_token_on_reads(client):
    paths = (await client.get("/openapi.json")).json()["paths"]
    for path in ("/submissions/{submission_id}", "/submissions/{submission_id}/image"):
        for method in ("get",) if path.endswith("image") else ("get", "delete"):
            operation = paths[path][method]  # the token is a credential: a security scheme beside the bearer
            assert {scheme for requirement in operation["security"] for scheme in requirement} == {
                "HTTPBearer", "DeletionToken"}, (method, path)
            assert {"401", "403", "404", "429"} <= set(operation["responses"]), (method, path)


# --- no-store and no leaks ------------------------------------------------------------------------


async def test_nothing_personal_may_be_cached(client, face_png, admin):
    photo = {"image": ("a.png", face_png, "image/png")}
    sub = await create(client, face_png)
    owner = {"X-Deletion-Token": sub["deletion_token"]}
    url = f"/submissions/{sub['id']}"
    answers = {
        "POST /predict": await client.post("/predict", files=photo),
        "POST /detect": await client.post("/detect", files=photo),
        "POST /submissions 422": await client.post("/submissions", files=photo, data={"first_name": "Zebulon"}),
        "GET /submissions": await client.get("/submissions", headers=admin),
        "GET one (owner)": await client.get(url, headers=owner),
        "GET one (admin)": await client.get(url, headers=admin),
        "GET /audit": await client.get("/audit", headers=admin),
        "GET /metrics": await client.get("/metrics"),
        "GET /healthz": await client.get("/healthz"),
        "403": await client.get(url, headers={"X-Deletion-Token": "wrong"}),
    }
    assert [r.status_code for r in answers.values()] == [200, 200, 422, 200, 200, 200, 200, 200, 200, 403]
    for name, response in answers.items():
        assert response.headers["cache-control"] == "no-store", name
    image = await client.get(f"{url}/image", headers=owner)
    assert image.headers["cache-control"] == "private, no-store"  # its own, kept
    created = await client.post("/submissions", files=photo, data={"first_name": "Zebulon", "true_age": "42",
                                                                   "consent": "true"})
    assert created.status_code == 201 and created.headers["cache-control"] == "no-store"


async def test_no_token_or_name_in_logs_metrics_errors_or_export_file_names(client, session, face_png, admin,
                                                                            tmp_path):
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    level, root.level = root.level, logging.INFO
    try:
        sub = await create(client, face_png, first_name="Xanthippe")
        owner = {"X-Deletion-Token": sub["deletion_token"]}
        url = f"/submissions/{sub['id']}"
        answers = [await client.get(url, headers=owner), await client.get(f"{url}/image", headers=owner),
                   await client.get(url, headers={"X-Deletion-Token": sub["deletion_token"][:-1]}),
                   await client.get("/submissions", headers={"Authorization": f"Bearer {ADMIN_TOKEN}x"}),
                   await client.get("/audit", headers=admin)]
        await export_submissions(session, tmp_path / "export")
        metrics = (await client.get("/metrics")).text
    finally:
        root.removeHandler(handler)
        root.level = level
    logs = stream.getvalue()
    errors = "".join(a.text for a in answers[2:4])
    names = " ".join(p.name for p in (tmp_path / "export").iterdir())
    assert names.endswith(".jpg") and sub["id"].replace("-", "")[:12] in names
    for secret in (sub["deletion_token"], sub["deletion_token"][:-1], ADMIN_TOKEN, "Xanthippe", "zebulon.png"):
        for where, text in (("logs", logs), ("metrics", metrics), ("errors", errors), ("export", names)):
            assert secret not in text, (secret, where)
    assert "JFIF" not in logs and "PNG" not in logs
    assert all(len(json.dumps(line)) < 2000 for line in logs.splitlines())
