"""Retention: WMA_RETENTION_DAYS removes older submissions (row, photo, idempotency key) with a clock
the tests control, on a schedule inside the service that one worker at a time runs (an advisory lock
in Postgres), and as `python -m api purge` for cron; the next export no longer has them."""

from __future__ import annotations

import json
import os
import re
import sys
import uuid
from datetime import UTC, datetime, timedelta

import anyio
import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import func, text
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from api.core.metrics import Metrics
from api.core.settings import Settings
from api.learning.submission_export import export_submissions
from api.main import create_app
from api.privacy import retention
from api.storage import db
from api.storage.tables import AuditEvent, AuthThrottle, IdempotencyKey, Submission
from tests.api.conftest import create_submission

pytestmark = pytest.mark.anyio

NOW = datetime.now(UTC)  # the controlled clock starts at the real time: rows made now are "new"


async def stored_at(session: AsyncSession, submission_id: str, when: datetime) -> None:
    row = await session.get(Submission, uuid.UUID(submission_id))
    assert row is not None
    row.created_at = when
    await session.commit()


async def count(session: AsyncSession, model) -> int:  # type: ignore[no-untyped-def]
    return (await session.exec(select(func.count()).select_from(model))).one()


async def test_a_purge_removes_what_is_older_than_the_retention_with_its_key_and_audits_it(
        client, session, face_png, tmp_path):
    old = await create_submission(client, face_png, key="old-submission-key-0001")
    edge = await create_submission(client, face_png)
    new = await create_submission(client, face_png, key="new-submission-key-0001")
    await stored_at(session, old["id"], NOW - timedelta(days=31))
    await stored_at(session, edge["id"], NOW - timedelta(days=30) + timedelta(seconds=1))  # not yet
    await stored_at(session, new["id"], NOW - timedelta(days=1))
    export = tmp_path / "export"
    assert await export_submissions(session, export) == (3, 0)

    purged = await retention.purge(session, retention_days=30, now=NOW)
    assert purged == retention.Purged(ran=True, submissions=1, idempotency_keys=0, auth_throttle_rows=0)
    left = {str(r.id) for r in (await session.exec(select(Submission))).all()}
    assert left == {edge["id"], new["id"]}
    keys = (await session.exec(select(IdempotencyKey.submission_id))).all()
    assert [str(k) for k in keys] == [new["id"]]  # the old one's key went with it
    (event,) = (await session.exec(select(AuditEvent).where(AuditEvent.action == "submission.purge"))).all()
    assert (event.action, event.actor, str(event.submission_id), event.detail) == (
        "submission.purge", "system", old["id"], {"retention_days": 30})

    # The next export no longer has it, and removes its file.
    assert await export_submissions(session, export) == (2, 1)
    assert not any(old["id"].replace("-", "")[:12] in p.name for p in export.iterdir())

    # A day later the edge one goes too.
    assert (await retention.purge(session, retention_days=30, now=NOW + timedelta(days=1))).submissions == 1


async def test_without_retention_submissions_stay_and_only_expired_keys_and_counts_go(client, session, face_png):
    sub = await create_submission(client, face_png, key="kept-submission-key-0001")
    await stored_at(session, sub["id"], NOW - timedelta(days=3650))
    key = (await session.exec(select(IdempotencyKey))).one()
    key.created_at = NOW - timedelta(hours=25)
    session.add(AuthThrottle(client="192.0.2.50", window_start=NOW - timedelta(seconds=61), failures=10))
    session.add(AuthThrottle(client="192.0.2.51", window_start=NOW - timedelta(seconds=30), failures=10))
    await session.commit()
    purged = await retention.purge(session, retention_days=None, now=NOW)
    assert purged == retention.Purged(ran=True, submissions=0, idempotency_keys=1, auth_throttle_rows=1)
    assert await count(session, Submission) == 1
    assert (await session.exec(select(AuthThrottle.client))).all() == ["192.0.2.51"]


async def test_only_one_process_purges_at_a_time(client, session, face_png, migrated_url):
    sub = await create_submission(client, face_png)
    await stored_at(session, sub["id"], NOW - timedelta(days=400))
    engine = db.create_engine(migrated_url)
    try:
        async with engine.connect() as other, other.begin():  # another worker, purging right now
            await other.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": retention.LOCK_ID})
            assert await retention.purge(session, retention_days=30, now=NOW) == retention.Purged(ran=False)
            assert await count(session, Submission) == 1
    finally:
        await engine.dispose()
    assert (await retention.purge(session, retention_days=30, now=NOW)).submissions == 1  # its turn now


@pytest.fixture
async def scratch_session(scratch_url):  # type: ignore[no-untyped-def]
    engine = db.create_engine(scratch_url)
    try:
        yield engine
    finally:
        await engine.dispose()


async def insert_submission(engine, created_at: datetime) -> uuid.UUID:  # type: ignore[no-untyped-def]
    row = Submission(first_name="Eileen", true_age=42, predicted_age=40.0, face_x=0, face_y=0, face_width=1,
                     face_height=1, model_version="test", img_filename="me.jpg", img_content_type="image/jpeg",
                     img_data=b"\xff\xd8 not really a photo", img_width=1, img_height=1,
                     deletion_token_hash=b"\0" * 32, created_at=created_at)
    async with AsyncSession(engine, expire_on_commit=False) as session:
        session.add(row)
        await session.commit()
    return row.id


async def ids(engine) -> set[uuid.UUID]:  # type: ignore[no-untyped-def]
    async with AsyncSession(engine) as session:
        return set((await session.exec(select(Submission.id))).all())


@pytest.mark.slow
async def test_the_schedule_purges_as_the_clock_moves_and_workers_do_not_collide(scratch_session):
    from sqlalchemy.ext.asyncio import async_sessionmaker

    engine = scratch_session
    first = await insert_submission(engine, NOW - timedelta(days=10))
    second = await insert_submission(engine, NOW - timedelta(days=5))
    clock = [NOW]
    metrics = Metrics()
    sessions = async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)
    async with anyio.create_task_group() as workers:  # two workers' schedules on one database
        for _ in range(2):
            workers.start_soon(lambda: retention.run_on_schedule(sessions, 7, metrics, interval=0.05,
                                                                 clock=lambda: clock[0]))
        await wait_until(lambda: ids(engine), lambda left: first not in left)
        assert second in await ids(engine)
        clock[0] += timedelta(days=3)
        await wait_until(lambda: ids(engine), lambda left: second not in left)
        workers.cancel_scope.cancel()
    async with AsyncSession(engine) as session:
        purges = (await session.exec(select(AuditEvent.submission_id)
                                     .where(AuditEvent.action == "submission.purge"))).all()
    assert sorted(purges) == sorted([first, second])  # each once, whichever worker did it
    assert 'whatsmyage_submissions_deleted_total{by="retention"} 2.0' in metrics.render().decode()


async def wait_until(read, done):  # type: ignore[no-untyped-def]
    """Polls the database (a purge is seen there, not signalled), for up to 20 s."""
    with anyio.fail_after(20):
        while not done(await read()):  # noqa: ASYNC110
            await anyio.sleep(0.05)


@pytest.mark.slow
async def test_the_service_purges_at_start_up_when_retention_is_set(settings, scratch_url, scratch_session):
    old = await insert_submission(scratch_session, datetime.now(UTC) - timedelta(days=91))
    recent = await insert_submission(scratch_session, datetime.now(UTC) - timedelta(days=89))
    app = create_app(settings.model_copy(update={"database_url": scratch_url, "retention_days": 90}))
    async with LifespanManager(app, startup_timeout=120, shutdown_timeout=30) as manager:
        await wait_until(lambda: ids(scratch_session), lambda left: old not in left)
        assert recent in await ids(scratch_session)
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            metrics = (await client.get("/metrics")).text
        assert 'whatsmyage_submissions_deleted_total{by="retention"} 1.0' in metrics


@pytest.mark.slow
async def test_the_purge_command_for_cron(scratch_url, scratch_session, tmp_path):
    now = datetime.now(UTC)
    old = await insert_submission(scratch_session, now - timedelta(days=15))
    recent = await insert_submission(scratch_session, now - timedelta(days=13))
    env = {k: v for k, v in os.environ.items() if not k.startswith("WMA_") and k != "ADMIN_TOKEN"}
    env |= {"DATABASE_URL": scratch_url.replace("+asyncpg", ""), "WMA_RETENTION_DAYS": "14"}
    command = [sys.executable, "-m", "api", "purge"]
    result = await anyio.run_process(command, cwd=tmp_path, env=env, check=False)
    assert result.returncode == 0, result.stderr
    *audit_lines, summary = result.stdout.decode().splitlines()
    assert re.match(r"purged \d+ submissions stored more than 14 days ago, ", summary)
    purged = [json.loads(line) for line in audit_lines]  # a JSON line per event, as in the service
    assert str(old) in {line["submission_id"] for line in purged}
    assert {(line["action"], line["actor"]) for line in purged} == {("submission.purge", "system")}
    remaining = await ids(scratch_session)
    assert old not in remaining and recent in remaining
    off = await anyio.run_process(command, cwd=tmp_path, env={**env, "WMA_RETENTION_DAYS": ""}, check=False)
    assert off.returncode == 2
    assert off.stderr.decode() == "whatsmyage: retention is off: set WMA_RETENTION_DAYS (or pass --days N) to purge\n"


def test_the_retention_setting(monkeypatch):
    monkeypatch.delenv("WMA_RETENTION_DAYS", raising=False)
    assert Settings(_env_file=None).retention_days is None
    for value, days in (("30", 30), ("", None), ("  ", None)):
        monkeypatch.setenv("WMA_RETENTION_DAYS", value)
        assert Settings(_env_file=None).retention_days == days
    for bad in ("0", "-1", "thirty", "1.5"):
        monkeypatch.setenv("WMA_RETENTION_DAYS", bad)
        with pytest.raises(ValueError):
            Settings(_env_file=None)
