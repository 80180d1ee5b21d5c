"""GET /healthz, and the OpenAPI document."""

from __future__ import annotations

import pytest

from tests.api.conftest import SHIPPED_VERSION

pytestmark = pytest.mark.anyio


async def test_health_is_ok_with_the_database_and_model_version(client):
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "model_version": SHIPPED_VERSION}


async def test_openapi_documents_every_route_with_models_and_problem_errors(client):
    spec = (await client.get("/openapi.json")).json()
    assert set(spec["paths"]) == {"/detect", "/predict", "/submissions", "/submissions/{submission_id}",
                                  "/submissions/{submission_id}/image", "/audit", "/healthz"}
    schemas = spec["components"]["schemas"]
    assert {"Problem", "FieldError", "PredictResponse", "DetectResponse", "SubmissionCreated", "SubmissionRead",
            "SubmissionPage", "AuditPage", "AuditEventRead", "Health"} <= set(schemas)
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
