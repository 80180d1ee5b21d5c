"""Operating the served app (`python -m api serve`, embedded Postgres) on the real thing:

- SIGTERM while uploads are in flight: each one is answered 201 and has its row, or is refused (503,
  or a connection the stopping server no longer takes) and has none; the service exits 0 and its
  embedded Postgres is shut down cleanly (pg_controldata: "shut down", no crash recovery next time)
  after the last of its two workers;
- `python -m api backup` while it serves, then `python -m api restore` into a new embedded database:
  everything stored before the backup began is there, photos byte for byte, and nothing that was not
  answered 201.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from api.core.settings import REPO_ROOT
from api.storage import db
from api.storage.embedded import binary
from tests.served import run_async, served

pytestmark = pytest.mark.slow

PHOTO = (Path(__file__).parent / "fixtures" / "astronaut.png").read_bytes()
FORM = {"first_name": "Eileen", "true_age": "42", "consent": "true"}


def submit(url: str) -> tuple[float, int | str, dict]:
    """One upload on a connection of its own: when it was answered, and how (a status or an error)."""
    try:
        response = httpx.post(url + "/submissions", data=FORM, files={"image": ("me.png", PHOTO, "image/png")},
                              headers={"Idempotency-Key": str(uuid.uuid4())}, timeout=60)
    except httpx.TransportError as exc:
        return time.monotonic(), type(exc).__name__, {}
    body = response.json() if response.headers.get("content-type", "").endswith("json") else {}
    return time.monotonic(), response.status_code, {**body, "retry-after": response.headers.get("retry-after")}


def stored(pgdata: Path) -> dict[str, bytes]:
    """The photos stored in an embedded database, by submission id (the server started for this, and stopped)."""
    database = db.start_embedded(pgdata)

    async def read() -> dict[str, bytes]:
        engine = create_async_engine(database.url)
        try:
            async with engine.connect() as connection:
                result = await connection.execute(text("SELECT id, img_data FROM submission"))
                return {str(r.id): bytes(r.img_data) for r in result}
        finally:
            await engine.dispose()

    try:
        return run_async(read)
    finally:
        database.stop()


def cluster_state(pgdata: Path) -> str:
    out = subprocess.run([str(binary("pg_controldata")), "-D", str(pgdata)], capture_output=True, text=True,
                         check=True).stdout
    return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Database cluster state"))


def test_sigterm_with_uploads_in_flight_answers_each_or_refuses_it_and_stops_postgres_cleanly():
    with served(workers=2) as app:
        answers: list[tuple[float, int | str, dict]] = []
        first = threading.Event()

        def upload() -> None:
            answers.append(submit(app.url))
            if answers[-1][1] == 201:
                first.set()

        threads = [threading.Thread(target=upload) for _ in range(12)]
        for thread in threads:
            thread.start()
        assert first.wait(60)
        terminated = time.monotonic()
        app.process.send_signal(signal.SIGTERM)  # the others are in flight
        for thread in threads:
            thread.join(90)
        assert app.process.wait(60) == 0
        assert not (app.pgdata / "postmaster.pid").exists()
        assert cluster_state(app.pgdata) == "shut down"  # stopped, not left to crash recovery

        created = {body["id"] for _, status, body in answers if status == 201}
        late = [status for at, status, _ in answers if status == 201 and at > terminated]
        refused = [(status, body) for _, status, body in answers if status != 201]
        print(f"\n12 uploads, SIGTERM after the first 201: {len(created)} answered 201 ({len(late)} after the "
              f"SIGTERM), refused: {[status for status, _ in refused]}")
        assert late, "no upload was still in flight at the SIGTERM"
        for status, body in refused:
            assert status == 503 and int(body["retry-after"]) > 0 or isinstance(status, str), (status, body)
        assert set(stored(app.pgdata)) == created  # every 201 has its row, and nothing else was stored


def test_a_backup_taken_while_serving_restores_into_a_new_embedded_database(tmp_path):
    with served() as app:
        before = {submit(app.url)[2]["id"] for _ in range(3)}
        stop = threading.Event()
        during: list[tuple[float, int | str, dict]] = []

        def keep_uploading() -> None:
            while not stop.is_set():
                during.append(submit(app.url))

        uploader = threading.Thread(target=keep_uploading)
        uploader.start()
        file = tmp_path / "backups" / "whatsmyage.dump"
        try:
            made = app.run("backup", "--out", str(file))
        finally:
            stop.set()
            uploader.join(60)
        assert made.returncode == 0, made.stderr
        assert f"{file}: {file.stat().st_size} bytes" in made.stdout
        assert {status for _, status, _ in during} == {201}
        assert app.stop() == -signal.SIGTERM
        source = stored(app.pgdata)

    new = Path(tempfile.mkdtemp(prefix="whatsmyage-restored-"))  # outside pytest's temp root, as in tests/served.py
    try:
        env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"} | {"WMA_DATA_DIR": str(new)}
        restored = subprocess.run([sys.executable, "-m", "api", "restore", str(file)], cwd=REPO_ROOT, env=env,
                                  capture_output=True, text=True, timeout=300)
        assert restored.returncode == 0, restored.stderr
        assert not (new / "pgdata" / "postmaster.pid").exists()  # started for the restore, stopped after it
        photos = stored(new / "pgdata")
    finally:
        shutil.rmtree(new, ignore_errors=True)
    created = before | {body["id"] for _, status, body in during if status == 201}
    assert before <= set(photos) <= created
    assert photos == {id_: source[id_] for id_ in photos}
