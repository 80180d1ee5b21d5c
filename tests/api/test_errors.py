"""One error shape for everything: problem+json with a stable code, also from the framework."""

from __future__ import annotations

import threading

import anyio
import httpx
import pytest
from sqlmodel.ext.asyncio.session import AsyncSession

from api.deps import Slots, get_session, get_slots
from api.storage.db import create_engine
from tests.api.conftest import SHIPPED_VERSION, assert_problem

pytestmark = pytest.mark.anyio


async def test_unknown_route_is_404_problem(client):
    assert_problem(await client.get("/nope"), 404, "not_found")
    assert_problem(await client.post("/nope"), 404, "not_found")


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/predict"), ("PUT", "/detect"), ("PATCH", "/submissions"), ("POST", "/healthz"),
    ("PUT", "/submissions/0b6f6d3e-5d5e-4f8e-9a53-2d1f3c9a7b10"),
])
async def test_wrong_method_is_405_problem_with_allow(client, method, path):
    response = await client.request(method, path)
    assert_problem(response, 405, "method_not_allowed")
    assert response.headers["allow"] and method not in response.headers["allow"]


async def test_declared_body_over_the_limit_is_413_without_reading_it(client, settings):
    limit = settings.max_upload_bytes + 64 * 1024
    response = await client.post("/predict", content=b"x" * 10, headers={
        "content-length": str(limit + 1), "content-type": "multipart/form-data; boundary=x"})
    assert_problem(response, 413, "body_too_large")


async def test_streamed_body_over_the_limit_is_413(client, settings):
    async def chunks():  # a well-formed multipart body with no Content-Length, 12 MiB of photo
        yield b'--x\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n'
        for _ in range(12):
            yield b"\0" * (1024 * 1024)
        yield b"\r\n--x--\r\n"

    response = await client.post("/predict", content=chunks(),
                                 headers={"content-type": "multipart/form-data; boundary=x"})
    assert_problem(response, 413, "body_too_large")


async def test_malformed_multipart_is_400_problem(client):
    response = await client.post("/predict", content=b"--x\r\nbroken", headers={"content-type": "multipart/form-data"})
    assert_problem(response, 400, "bad_request")


async def test_overload_answers_503_with_retry_after(client, app, face_png):
    slots = Slots(1, wait=0.1)
    app.dependency_overrides[get_slots] = lambda: slots
    release = threading.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(slots.run, release.wait, 10)  # holds the only slot
        await anyio.sleep(0.05)
        response = await client.post("/predict", files={"image": ("a.png", face_png, "image/png")})
        release.set()
    body = assert_problem(response, 503, "overloaded")
    assert response.headers["retry-after"] == "1"
    assert "busy" in body["detail"]
    assert (await client.post("/predict", files={"image": ("a.png", face_png, "image/png")})).status_code == 200


@pytest.fixture
async def dead_database(app, tmp_path):
    """Requests get sessions on a server that is not there (a Unix socket nobody listens on)."""
    engine = create_engine(f"postgresql+asyncpg://postgres@/postgres?host={tmp_path}")

    async def dead_session():
        async with AsyncSession(engine) as session:
            yield session

    app.dependency_overrides[get_session] = dead_session
    yield
    await engine.dispose()


async def test_health_reports_an_unreachable_database_with_503(client, dead_database):
    response = await client.get("/healthz")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert response.json() == {"status": "degraded", "database": "unavailable", "model_version": SHIPPED_VERSION}


async def test_submission_with_the_database_down_is_503_and_predict_still_works(client, dead_database, face_png,
                                                                                admin):
    fields = {"first_name": "Eileen", "true_age": "42", "consent": "true"}
    response = await client.post("/submissions", data=fields, files={"image": ("a.png", face_png, "image/png")})
    assert_problem(response, 503, "database_unavailable")
    assert response.headers["retry-after"] == "5"
    assert_problem(await client.get("/submissions", headers=admin), 503, "database_unavailable")
    assert (await client.post("/predict", files={"image": ("a.png", face_png, "image/png")})).status_code == 200


async def test_unexpected_errors_are_500_problem_without_internals(app, served):
    def broken():
        raise RuntimeError("secret internal detail")

    app.dependency_overrides[get_slots] = broken
    transport = httpx.ASGITransport(app=served[1], raise_app_exceptions=False)  # as a server would
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.post("/predict", files={"image": ("a.png", b"x", "image/png")})
    assert_problem(response, 500, "internal_error")
    assert "secret" not in response.text and "RuntimeError" not in response.text


@pytest.mark.parametrize(("method", "path", "allow"), [
    ("OPTIONS", "/submissions", "GET, POST"),
    ("PUT", "/submissions", "GET, POST"),
    ("OPTIONS", "/submissions/0b6f6d3e-5d5e-4f8e-9a53-2d1f3c9a7b10", "GET, DELETE"),
    ("POST", "/submissions/0b6f6d3e-5d5e-4f8e-9a53-2d1f3c9a7b10/image", "GET"),
    ("GET", "/predict", "POST"),
])
async def test_a_405_allows_every_method_of_the_path(client, method, path, allow):
    response = await client.request(method, path)
    assert_problem(response, 405, "method_not_allowed")
    assert response.headers["allow"] == allow
