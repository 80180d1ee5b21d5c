"""GET /healthz, the probes /livez and /readyz, and the OpenAPI document."""

from __future__ import annotations

import socket

import httpx
import pytest
from asgi_lifespan import LifespanManager

from api.main import create_app
from tests.api.conftest import SHIPPED_VERSION

pytestmark = pytest.mark.anyio


async def test_health_is_ok_with_the_database_and_model_version(client):
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "model_version": SHIPPED_VERSION}


async def test_probes_answer_without_asking_the_database(client):
    live = await client.get("/livez")
    assert live.status_code == 200 and live.json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200 and ready.json() == {"status": "ready", "model_version": SHIPPED_VERSION}


def closed_port() -> int:
    """A loopback port nobody listens on: connections to it are refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_a_replica_started_while_the_database_is_down_is_ready_and_predicts(settings, face_png):
    """What Kubernetes sees of a pod started (or restarted, or added by the autoscaler) during a
    database outage: ready, and serving /predict, while /healthz reports the outage."""
    down = settings.model_copy(update={"database_url": f"postgresql://postgres@127.0.0.1:{closed_port()}/none"})
    app = create_app(down)
    async with LifespanManager(app, startup_timeout=120, shutdown_timeout=30) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=60) as client:
            assert (await client.get("/livez")).status_code == 200
            assert (await client.get("/readyz")).json() == {"status": "ready", "model_version": SHIPPED_VERSION}
            predicted = await client.post("/predict", files={"image": ("me.png", face_png, "image/png")})
            assert predicted.status_code == 200 and len(predicted.json()["faces"]) == 1
            health = await client.get("/healthz")
            assert health.status_code == 503 and health.json()["database"] == "unavailable"


async def test_openapi_documents_every_route_with_models_and_problem_errors(client):
    spec = (await client.get("/openapi.json")).json()
    assert set(spec["paths"]) == {"/detect", "/predict", "/submissions", "/submissions/{submission_id}",
                                  "/submissions/{submission_id}/image", "/audit", "/model", "/models",
                                  "/models/{version}/activate", "/healthz"}
    schemas = spec["components"]["schemas"]
    assert {"Problem", "FieldError", "PredictResponse", "DetectResponse", "SubmissionCreated", "SubmissionRead",
            "SubmissionPage", "AuditPage", "AuditEventRead", "Health", "ModelRead", "ModelList",
            "ModelVersionRead"} <= set(schemas)
    assert "HTTPValidationError" not in schemas
    health_503 = spec["paths"]["/healthz"]["get"]["responses"]["503"]["content"]["application/json"]
    assert health_503["schema"]["$ref"].endswith("/Health")
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            if path == "/healthz":
                continue
            errors = {s: r for s, r in operation["responses"].items() if s.startswith(("4", "5"))}
            assert errors, (method, path)
            for status, response in errors.items():
                assert list(response["content"]) == ["application/problem+json"], (method, path, status)
                assert response["content"]["application/problem+json"]["example"]["status"] == int(status)
    assert schemas["PredictResponse"]["examples"]
    created = spec["paths"]["/submissions"]["post"]["responses"]["201"]["content"]["application/json"]
    assert created["schema"]["$ref"].endswith("/SubmissionCreated")
    assert "bearer" in str(spec["components"]["securitySchemes"]).lower()


async def test_docs_page_is_served(client):
    response = await client.get("/docs")
    assert response.status_code == 200 and "swagger" in response.text.lower()
