"""api/storage/backup.py on the tests' server (the embedded Postgres of the run, or TEST_DATABASE_URL's):
a backup taken while the app stores submissions restores into an empty database with every row and
photo byte for byte, consistent (each idempotency key with its submission); a restore refuses a
database that is not empty unless told to replace it; a damaged backup restores nothing."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import create_async_engine

from api.main import create_app
from api.storage import backup
from tests.api.conftest import _admin_execute

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

FORM = {"first_name": "Eileen", "true_age": "42", "consent": "true"}


@pytest.fixture
def empty_url(scratch_url: str) -> Iterator[str]:
    """A new, empty database on the same server, dropped at the end."""
    server = make_url(scratch_url)
    name = f"restored_{uuid.uuid4().hex[:10]}"
    admin_url = server.render_as_string(hide_password=False)
    asyncio.run(_admin_execute(admin_url, f'CREATE DATABASE "{name}"'))
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(_admin_execute(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def rows(url: str) -> dict[str, dict]:
    """Every submission (all its columns, the photo's bytes included), by id; and the other tables."""
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            submissions = {str(r.id): dict(r._mapping) for r in await connection.execute(
                text("SELECT * FROM submission"))}
            keys = [(bytes(r.key_hash), str(r.submission_id)) for r in await connection.execute(
                text("SELECT key_hash, submission_id FROM idempotency_key"))]
            version = (await connection.execute(text("SELECT version_num FROM alembic_version"))).scalar_one()
    finally:
        await engine.dispose()
    return {"submissions": submissions, "keys": keys, "version": version}


async def test_a_backup_taken_while_storing_restores_into_an_empty_database_whole(scratch_url, empty_url, settings,
                                                                                  face_png, tmp_path):
    app = create_app(settings.model_copy(update={"database_url": scratch_url}))
    file = tmp_path / "whatsmyage.dump"
    async with LifespanManager(app, startup_timeout=120, shutdown_timeout=30) as manager, httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url="http://t", timeout=60) as client:

        async def submit() -> httpx.Response:
            response = await client.post("/submissions", data=FORM, files={"image": ("me.png", face_png, "image/png")},
                                         headers={"Idempotency-Key": str(uuid.uuid4())})
            assert response.status_code == 201, response.text
            return response

        before = [(await submit()).json()["id"] for _ in range(3)]
        done = threading.Event()
        made: list[backup.BackupFile] = []

        def take_backup() -> None:
            try:
                made.append(backup.backup(scratch_url, file))
            finally:
                done.set()

        # The backup runs while submissions go on being stored.
        thread = threading.Thread(target=take_backup)
        thread.start()
        during = 0
        while not done.is_set() or during < 2:
            await submit()
            during += 1
        await anyio.to_thread.run_sync(thread.join)
    assert made and made[0].size == file.stat().st_size > 3 * 10_000  # the photos are in it

    await anyio.to_thread.run_sync(backup.restore, empty_url, file)
    source, restored = await rows(scratch_url), await rows(empty_url)
    assert set(before) <= set(restored["submissions"]) <= set(source["submissions"])
    for id_, row in restored["submissions"].items():
        assert row == source["submissions"][id_]  # every column, the photo byte for byte
    assert {k for k, _ in restored["keys"]} <= {k for k, _ in source["keys"]}
    assert {s for _, s in restored["keys"]} == set(restored["submissions"])  # one snapshot: each key with its row
    assert restored["version"] == source["version"]


async def test_a_restore_refuses_a_database_that_is_not_empty_unless_told_to_replace_it(scratch_url, empty_url,
                                                                                        tmp_path):
    file = tmp_path / "whatsmyage.dump"
    await anyio.to_thread.run_sync(backup.backup, scratch_url, file)
    with pytest.raises(backup.BackupError, match="not empty"):
        await anyio.to_thread.run_sync(backup.restore, scratch_url, file)

    await _admin_execute(empty_url, "CREATE TABLE leftover (x int)")  # not in the backup: goes too
    await anyio.to_thread.run_sync(lambda: backup.restore(empty_url, file, replace=True))
    assert (await rows(empty_url))["submissions"] == (await rows(scratch_url))["submissions"]
    assert await tables(empty_url) == await tables(scratch_url)


async def tables(url: str) -> set[str]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            return set((await connection.execute(text(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"))).scalars())
    finally:
        await engine.dispose()


async def test_a_damaged_backup_restores_nothing(scratch_url, empty_url, tmp_path):
    engine = create_async_engine(scratch_url)
    async with engine.begin() as connection:  # photos that do not compress: most of the file is theirs
        await connection.execute(text(
            "INSERT INTO submission (id, created_at, first_name, true_age, predicted_age, face_x, face_y, face_width, "
            "face_height, model_version, img_filename, img_content_type, img_data, img_width, img_height, "
            "deletion_token_hash) SELECT gen_random_uuid(), now(), 'Eileen', 42, 40.0, 1, 2, 3, 4, 'm', 'a.jpg', "
            "'image/jpeg', (SELECT string_agg(md5(random()::text || i::text), '') FROM generate_series(1, 3000) i)"
            "::bytea, 64, 64, '\\x00' FROM generate_series(1, 5)"))
    await engine.dispose()
    file = tmp_path / "whatsmyage.dump"
    await anyio.to_thread.run_sync(backup.backup, scratch_url, file)
    damaged = tmp_path / "damaged.dump"
    data = file.read_bytes()
    damaged.write_bytes(data[: len(data) * 9 // 10])  # its table of contents whole, the photos cut short
    with pytest.raises(backup.BackupError, match="nothing was restored"):
        await anyio.to_thread.run_sync(backup.restore, empty_url, damaged)
    assert await tables(empty_url) == set()


def test_a_failed_backup_leaves_no_file(tmp_path: Path):
    out = tmp_path / "nope.dump"
    with pytest.raises(backup.BackupError, match="pg_dump failed"):
        backup.backup(f"postgresql://postgres@/postgres?host={tmp_path}", out)  # nobody listens there
    assert list(tmp_path.iterdir()) == []
