"""The audit trail: every listing, read, photo read and deletion (by owner or admin), export and model
change is one row of the append-only `audit_event` table and one JSON log line, with who, what, which
submission or model and the request id, never a photo, name or token; `GET /audit` for the admin."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from functools import partial

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlmodel import select

from api.learning.submission_export import export_submissions
from api.privacy import audit
from api.storage.tables import AuditEvent
from tests.api.conftest import ADMIN_TOKEN, assert_problem, captured_logs, create_submission

pytestmark = pytest.mark.anyio


# A name and a file name to look for where they must not be.
create = partial(create_submission, first_name="Zebulon", filename="zebulon-at-home.png")


@pytest.fixture
def audit_logs() -> Iterator[Callable[[], list[dict]]]:
    with captured_logs("api.audit") as lines:
        yield lines


async def events(session) -> list[AuditEvent]:
    return list((await session.exec(select(AuditEvent).order_by(AuditEvent.id))).all())  # type: ignore[arg-type]


async def test_each_access_and_deletion_is_recorded_with_who_what_and_the_request_id(
        client, session, face_png, admin, audit_logs):
    mine, theirs = await create(client, face_png), await create(client, face_png)
    owner = {"X-Deletion-Token": mine["deletion_token"]}
    calls = [
        ("GET", "/submissions?limit=5", admin, "submissions.list", "admin", None),
        ("GET", f"/submissions/{theirs['id']}", admin, "submission.read", "admin", theirs["id"]),
        ("GET", f"/submissions/{theirs['id']}/image", admin, "submission.image.read", "admin", theirs["id"]),
        ("GET", f"/submissions/{mine['id']}", owner, "submission.read", "owner", mine["id"]),
        ("GET", f"/submissions/{mine['id']}/image", owner, "submission.image.read", "owner", mine["id"]),
        ("DELETE", f"/submissions/{mine['id']}", owner, "submission.delete", "owner", mine["id"]),
        ("DELETE", f"/submissions/{theirs['id']}", admin, "submission.delete", "admin", theirs["id"]),
    ]
    request_ids = []
    for method, url, headers, *_ in calls:
        response = await client.request(method, url, headers=headers)
        assert response.status_code in (200, 204), (url, response.text)
        request_ids.append(response.headers["x-request-id"])

    rows = await events(session)
    assert [(r.action, r.actor, str(r.submission_id) if r.submission_id else None) for r in rows] == [
        (action, actor, sid) for *_, action, actor, sid in calls]
    assert [r.request_id for r in rows] == request_ids
    assert rows[0].detail == {"limit": 5, "offset": 0, "submission_ids": [theirs["id"], mine["id"]]}
    assert all(r.model_version is None and r.at is not None for r in rows)

    lines = audit_logs()
    assert [(line["message"], line["action"], line["actor"], line["request_id"]) for line in lines] == [
        ("audit", r.action, r.actor, r.request_id) for r in rows]
    assert [line.get("submission_id") for line in lines] == [str(r.submission_id) if r.submission_id else None
                                                             for r in rows]
    stored = json.dumps([r.model_dump(mode="json") for r in rows]) + json.dumps(lines)
    for secret in ("Zebulon", "zebulon-at-home", mine["deletion_token"], theirs["deletion_token"], ADMIN_TOKEN):
        assert secret not in stored


async def test_refused_and_missing_reads_record_nothing(client, session, face_png, admin, audit_logs):
    sub = await create(client, face_png)
    url = f"/submissions/{sub['id']}"
    assert_problem(await client.get(url), 401, "not_authenticated")
    assert_problem(await client.get(url, headers={"Authorization": "Bearer " + "w" * 40}), 401, "invalid_token")
    assert_problem(await client.get(f"{url}/image", headers={"X-Deletion-Token": "wrong"}), 403,
                   "invalid_deletion_token")
    assert_problem(await client.delete(url, headers={"X-Deletion-Token": "wrong"}), 403, "invalid_deletion_token")
    assert_problem(await client.get(f"/submissions/{uuid.uuid4()}", headers=admin), 404, "not_found")
    assert await events(session) == [] and audit_logs() == []


async def test_get_audit_is_admin_only_newest_first_paged_and_filtered(client, face_png, admin):
    subs = [await create(client, face_png) for _ in range(2)]
    assert_problem(await client.get("/audit"), 401, "not_authenticated")
    await client.get("/submissions?limit=1", headers=admin)  # lists subs[1] only (newest first)
    for sub in subs:
        await client.get(f"/submissions/{sub['id']}", headers=admin)
    await client.delete(f"/submissions/{subs[0]['id']}", headers={"X-Deletion-Token": subs[0]["deletion_token"]})

    page = (await client.get("/audit", params={"limit": 2}, headers=admin)).json()
    assert (page["total"], page["limit"], page["offset"]) == (4, 2, 0)
    assert [(e["action"], e["actor"]) for e in page["items"]] == [("submission.delete", "owner"),
                                                                  ("submission.read", "admin")]
    rest = (await client.get("/audit", params={"limit": 2, "offset": 2}, headers=admin)).json()
    assert [e["action"] for e in rest["items"]] == ["submission.read", "submissions.list"]
    assert set(page["items"][0]) == {"id", "at", "action", "actor", "submission_id", "model_version", "request_id",
                                     "detail"}

    about_first = (await client.get("/audit", params={"submission_id": subs[0]["id"]}, headers=admin)).json()
    assert [e["action"] for e in about_first["items"]] == ["submission.delete", "submission.read"]
    about_second = (await client.get("/audit", params={"submission_id": subs[1]["id"]}, headers=admin)).json()
    assert [e["action"] for e in about_second["items"]] == ["submission.read", "submissions.list"]  # listed too
    reads = (await client.get("/audit", params={"action": "submission.read"}, headers=admin)).json()
    assert reads["total"] == 2
    assert_problem(await client.get("/audit", params={"action": "drop table"}, headers=admin), 422,
                   "validation_error")
    assert_problem(await client.get("/audit", params={"limit": 501}, headers=admin), 422, "validation_error")


async def test_model_changes_and_exports_are_recorded(client, session, face_png, admin, tmp_path):
    audit.record(session, action=audit.MODEL_ACTIVATE, actor="admin", model_version="resnet10x3-utkface-v3")
    audit.record(session, action=audit.MODEL_RETRAIN, actor="system", model_version="resnet10x3-utkface-v3",
                 detail={"submissions": 12})
    await session.commit()
    await create(client, face_png)
    assert await export_submissions(session, tmp_path / "export") == (1, 0)
    items = (await client.get("/audit", headers=admin)).json()["items"]
    assert [(e["action"], e["actor"], e["model_version"], e["detail"]) for e in items] == [
        ("submissions.export", "admin", None, {"submissions": 1, "files_removed": 0}),
        ("model.retrain", "system", "resnet10x3-utkface-v3", {"submissions": 12}),
        ("model.activate", "admin", "resnet10x3-utkface-v3", {}),
    ]
    assert all(e["request_id"] is None for e in items)  # not made by a request


async def test_record_refuses_unknown_actions_and_actors(session):
    with pytest.raises(ValueError, match="action"):
        audit.record(session, action="submission.peek", actor="admin")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="actor"):
        audit.record(session, action=audit.SUBMISSION_READ, actor="root")  # type: ignore[arg-type]


async def test_an_event_is_logged_only_once_committed(session, audit_logs):
    audit.record(session, action=audit.MODEL_ACTIVATE, actor="admin", model_version="v-rolled-back")
    await session.flush()
    assert audit_logs() == []
    await session.rollback()
    audit.record(session, action=audit.MODEL_ACTIVATE, actor="admin", model_version="v-committed")
    await session.commit()
    assert [line["model_version"] for line in audit_logs()] == ["v-committed"]


@pytest.mark.parametrize("statement", ["UPDATE audit_event SET actor = 'owner'", "DELETE FROM audit_event",
                                       "TRUNCATE audit_event"])
async def test_the_table_is_append_only(session, statement):
    audit.record(session, action=audit.MODEL_ACTIVATE, actor="admin", model_version="v1")
    await session.commit()
    with pytest.raises(DBAPIError, match="audit_event is append-only"):
        async with session.begin_nested():
            await session.exec(text(statement))  # type: ignore[call-overload]
    assert len(await events(session)) == 1
