"""Idempotency-Key on POST /submissions (row 49 of the hardening table): a retry is answered like
the first request and stores nothing new; the key cannot be reused for another request; a retry
while the first still runs is 409. Kept in the database (hashed), so it holds across workers."""

from __future__ import annotations

import hashlib
import threading
import uuid
from datetime import timedelta
from pathlib import Path

import anyio
import httpx
import pytest
from sqlalchemy import text, update
from sqlmodel import func, select

from api.core.settings import Settings
from api.deps import Slots, get_session, get_slots
from api.main import create_app
from api.storage.tables import IdempotencyKey, Submission, utcnow
from tests.api.conftest import assert_problem

pytestmark = pytest.mark.anyio

FORM = {"first_name": "Eileen", "true_age": "42", "consent": "true"}


def submit(client, image: bytes, key: str | None, *, name: str = "me.png", **fields: str):
    headers = {"Idempotency-Key": key} if key is not None else {}
    return client.post("/submissions", data={**FORM, **fields}, files={"image": (name, image, "image/png")},
                       headers=headers)


async def rows(session, table=Submission) -> int:
    return (await session.exec(select(func.count()).select_from(table))).one()


def new_key() -> str:
    return str(uuid.uuid4())


async def test_a_retry_with_the_same_key_gets_the_first_answer_and_stores_nothing(client, app, session, face_png):
    key = new_key()
    first = await submit(client, face_png, key)
    assert first.status_code == 201 and "idempotent-replayed" not in first.headers
    # The retry needs no processing: with every slot taken it is answered all the same.
    busy = Slots(1, wait=0.1)
    app.dependency_overrides[get_slots] = lambda: busy
    release = threading.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(busy.run, release.wait, 10)
        await anyio.sleep(0.05)
        again = await submit(client, face_png, key)
        release.set()
    assert again.status_code == 201
    assert again.json() == first.json()  # the same id, prediction, created_at and deletion token
    assert again.headers["idempotent-replayed"] == "true"
    assert again.headers["cache-control"] == "no-store"
    assert await rows(session) == 1 and await rows(session, IdempotencyKey) == 1
    # the replayed deletion token is the real one
    deleted = await client.delete(f"/submissions/{first.json()['id']}",
                                  headers={"X-Deletion-Token": again.json()["deletion_token"]})
    assert deleted.status_code == 204
    assert await rows(session) == 0 and await rows(session, IdempotencyKey) == 0  # the key went with it


async def test_the_quoted_form_of_a_key_is_the_same_key(client, session, face_png):
    key = new_key()
    first = await submit(client, face_png, key)
    again = await submit(client, face_png, f'"{key}"')  # an RFC 8941 string, as the IETF draft writes it
    assert again.json()["id"] == first.json()["id"]
    assert await rows(session) == 1


@pytest.mark.parametrize("change", [
    {"first_name": "Eileena"}, {"true_age": "43"}, {"name": "other.png"}, {"image": "other"},
], ids=["first_name", "true_age", "file_name", "photo"])
async def test_the_same_key_with_another_request_is_422(client, session, face_png, change):
    key = new_key()
    assert (await submit(client, face_png, key)).status_code == 201
    image = face_png + b"\0" if change.pop("image", None) else face_png
    response = await submit(client, image, key, **change)
    assert_problem(response, 422, "idempotency_key_reused")
    assert await rows(session) == 1


async def test_another_key_is_another_submission(client, session, face_png):
    one, two = await submit(client, face_png, new_key()), await submit(client, face_png, new_key())
    assert one.json()["id"] != two.json()["id"]
    assert await rows(session) == 2
    assert (await submit(client, face_png, None)).status_code == 201  # no key: no protection, no record
    assert await rows(session) == 3 and await rows(session, IdempotencyKey) == 2


async def test_refusals_are_not_recorded_so_a_corrected_retry_goes_through(client, session, face_png, noface_png):
    key = new_key()
    assert_problem(await submit(client, noface_png, key), 422, "no_face_detected")
    assert_problem(await submit(client, face_png, key, consent="false"), 422, "consent_required")
    assert (await submit(client, face_png, key)).status_code == 201


@pytest.mark.parametrize("key", ["short", "x" * 256, "has space in it 0123", "tab\there-0123456789", "é" * 20,
                                 '"unbalanced-0123456789'])
async def test_malformed_keys_are_a_validation_error(client, session, face_png, key):
    body = assert_problem(await submit(client, face_png, key.encode()), 422, "validation_error")
    assert [e["field"] for e in body["errors"]] == ["idempotency-key"]
    assert await rows(session) == 0


async def test_the_database_keeps_neither_the_key_nor_the_deletion_token(client, session, face_png):
    key = new_key()
    created = (await submit(client, face_png, key)).json()
    [row] = (await session.exec(select(IdempotencyKey))).all()
    assert row.key_hash == hashlib.sha256(key.encode()).digest()
    assert str(row.submission_id) == created["id"]
    stored = repr(row.model_dump()).encode()
    assert key.encode() not in stored and created["deletion_token"].encode() not in stored
    assert "deletion_token" not in row.response


async def test_a_key_expires_after_24_hours(client, session, face_png):
    key = new_key()
    first = (await submit(client, face_png, key)).json()
    await session.exec(update(IdempotencyKey).values(created_at=utcnow() - timedelta(hours=24, minutes=1)))
    second = await submit(client, face_png, key)
    assert second.status_code == 201 and second.json()["id"] != first["id"]
    assert await rows(session) == 2 and await rows(session, IdempotencyKey) == 1


@pytest.fixture
async def committing(app, engine):
    """The app with real sessions (each request its own transaction, committed for real), so that
    requests can see each other's locks; what they stored is deleted afterwards."""
    app.dependency_overrides.pop(get_session, None)
    yield
    async with engine.begin() as connection:
        await connection.execute(text("DELETE FROM submission WHERE first_name = 'Concurrent'"))


async def advisory_locks(engine) -> int:
    async with engine.connect() as connection:
        return (await connection.execute(text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"))).scalar()


async def test_a_retry_while_the_first_request_runs_is_409(client, app, engine, committing, face_png):
    slots = Slots(1, wait=10)
    app.dependency_overrides[get_slots] = lambda: slots
    release = threading.Event()
    key, results = new_key(), {}

    async def first() -> None:
        results["first"] = await submit(client, face_png, key, first_name="Concurrent")

    async with anyio.create_task_group() as tg:
        tg.start_soon(slots.run, release.wait, 10)  # the only slot is busy: the first request waits for it ...
        tg.start_soon(first)
        with anyio.fail_after(10):  # ... holding its key
            while await advisory_locks(engine) == 0:  # noqa: ASYNC110 (a lock in another connection)
                await anyio.sleep(0.02)
        results["retry"] = await submit(client, face_png, key, first_name="Concurrent")
        release.set()
    retry = results["retry"]
    assert_problem(retry, 409, "idempotency_in_progress")
    assert retry.headers["retry-after"] == "1"
    assert results["first"].status_code == 201
    later = await submit(client, face_png, key, first_name="Concurrent")  # once the first is done: its answer
    assert later.status_code == 201 and later.json() == results["first"].json()
    async with engine.connect() as connection:
        stored = (await connection.execute(text("SELECT id FROM submission WHERE first_name = 'Concurrent'"))).all()
    assert [str(r.id) for r in stored] == [results["first"].json()["id"]]
    assert await advisory_locks(engine) == 0  # released with the commits


async def test_a_cross_origin_client_may_send_the_key_and_read_the_replay_header():
    app = create_app(Settings(_env_file=None, cors_origins=["https://ui.example"], frontend_dir=Path("/nonexistent")))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        response = await client.options("/submissions", headers={
            "Origin": "https://ui.example", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "idempotency-key"})
        assert response.status_code == 200
        assert "idempotency-key" in response.headers["access-control-allow-headers"].lower()
        refused = await client.post("/submissions", json={}, headers={"Origin": "https://ui.example"})
    assert {"retry-after", "idempotent-replayed"} <= set(refused.headers["access-control-expose-headers"].lower()
                                                          .replace(" ", "").split(","))


async def test_expired_keys_locked_by_another_request_do_not_hold_this_one_up(client, engine, committing, face_png):
    assert (await submit(client, face_png, new_key(), first_name="Concurrent")).status_code == 201
    async with engine.connect() as other:
        await other.execute(text("UPDATE idempotency_key SET created_at = now() - interval '25 hours'"))
        await other.commit()
        await other.execute(text("SELECT 1 FROM idempotency_key FOR UPDATE"))  # another request purging it
        with anyio.fail_after(5):  # without SKIP LOCKED this would wait for `other` to end
            response = await submit(client, face_png, new_key(), first_name="Concurrent")
        await other.rollback()
    assert response.status_code == 201
