"""Request ids and structured logs: an `X-Request-ID` on every answer, one JSON line per request with
that id, and nothing personal (name, token, photo, query string) in any line."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator

import pytest

from api.deps import get_slots
from tests.api.conftest import ADMIN_TOKEN, assert_problem, captured_logs

pytestmark = pytest.mark.anyio

GENERATED = re.compile(r"[0-9a-f]{32}")


@pytest.fixture
def json_logs() -> Iterator[Callable[[], list[dict]]]:
    """Every record at INFO and above, formatted as the served app formats it; call for the lines."""
    with captured_logs() as lines:
        yield lines


def access_lines(lines: list[dict]) -> list[dict]:
    return [line for line in lines if line["logger"] == "api.access"]


async def test_every_answer_carries_a_request_id(client, face_png):
    answers = [
        await client.get("/healthz"),
        await client.post("/predict", files={"image": ("a.png", face_png, "image/png")}),
        await client.get("/no-such-page"),
        await client.get("/predict"),
        await client.post("/submissions", data={"first_name": "Eileen", "true_age": "old", "consent": "true"},
                          files={"image": ("a.png", face_png, "image/png")}),
        await client.post("/predict", content=b"0" * (10 * 1024 * 1024 + 65 * 1024),
                          headers={"Content-Type": "multipart/form-data; boundary=x"}),
    ]
    assert [a.status_code for a in answers] == [200, 200, 404, 405, 422, 413]
    ids = [a.headers.get("X-Request-ID") for a in answers]
    assert all(i and GENERATED.fullmatch(i) for i in ids), ids
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize("given", ["abc-123", "0c6f8e0f-6f0b-4c5b-9a3f-2f1e8d7c6b5a", "lb:req_1.2", "a" * 128])
async def test_a_valid_incoming_request_id_is_echoed_and_logged(client, json_logs, given):
    response = await client.get("/healthz", headers={"X-Request-ID": given})
    assert response.headers["X-Request-ID"] == given
    assert [line["request_id"] for line in access_lines(json_logs())] == [given]


@pytest.mark.parametrize("given", ["a" * 129, "has space", '"quoted"', "<script>", "x;y", "é".encode(), "",
                                   "a\tb"])
async def test_an_invalid_incoming_request_id_is_replaced(client, given):
    response = await client.get("/no-such-page", headers={"X-Request-ID": given})
    assert_problem(response, 404, "not_found")
    replaced = response.headers["X-Request-ID"]
    assert GENERATED.fullmatch(replaced) and replaced != given


async def test_each_request_logs_one_json_line_with_its_id_route_status_and_duration(client, json_logs, admin):
    response = await client.get("/submissions/00000000-0000-4000-8000-000000000000", headers=admin)
    assert response.status_code == 404
    (line,) = access_lines(json_logs())
    assert line["request_id"] == response.headers["X-Request-ID"]
    assert (line["level"], line["message"], line["method"]) == ("INFO", "request", "GET")
    assert (line["route"], line["status"]) == ("/submissions/{submission_id}", 404)
    assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"])
    assert "00000000-0000-4000-8000-000000000000" not in json.dumps(json_logs())


async def test_logs_never_hold_a_name_a_token_a_photo_or_a_query_string(client, json_logs, face_png, admin):
    created = await client.post("/submissions", files={"image": ("Zebulon-at-home.png", face_png, "image/png")},
                                data={"first_name": "Zebulon", "true_age": "42", "consent": "true"})
    assert created.status_code == 201
    body = created.json()
    listed = await client.get("/submissions?limit=5&offset=0&token=hunter2", headers=admin)
    assert listed.status_code == 200
    wrong = await client.delete(f"/submissions/{body['id']}", headers={"X-Deletion-Token": "not-the-token"})
    assert_problem(wrong, 403, "invalid_deletion_token")
    deleted = await client.delete(f"/submissions/{body['id']}", headers={"X-Deletion-Token": body["deletion_token"]})
    assert deleted.status_code == 204

    lines = json_logs()
    assert [(line["method"], line["route"], line["status"]) for line in access_lines(lines)] == [
        ("POST", "/submissions", 201), ("GET", "/submissions", 200),
        ("DELETE", "/submissions/{submission_id}", 403), ("DELETE", "/submissions/{submission_id}", 204)]
    text = "\n".join(json.dumps(line, ensure_ascii=False) for line in lines)
    for secret in ("Zebulon", body["deletion_token"], "not-the-token", ADMIN_TOKEN, "hunter2", "Bearer"):
        assert secret not in text, secret
    assert "PNG" not in text and "IHDR" not in text and max(len(json.dumps(line)) for line in lines) < 1000


async def test_an_unexpected_error_is_answered_500_with_its_id_and_logged_with_its_traceback(app, client, json_logs):
    def broken():
        raise RuntimeError("secret internal detail")

    app.dependency_overrides[get_slots] = broken
    response = await client.post("/predict", files={"image": ("a.png", b"x", "image/png")},
                                 headers={"X-Request-ID": "trace-me-500"})
    assert_problem(response, 500, "internal_error")
    assert response.headers["X-Request-ID"] == "trace-me-500"
    assert "secret" not in response.text
    lines = json_logs()
    (error,) = [line for line in lines if line["level"] == "ERROR"]
    assert error["request_id"] == "trace-me-500" and error["error"] == "RuntimeError"
    assert "secret internal detail" in error["traceback"]  # for the operator, never for the client
    (access,) = access_lines(lines)
    assert (access["request_id"], access["status"], access["route"]) == ("trace-me-500", 500, "/predict")


async def test_records_made_off_the_event_loop_carry_the_request_id(app, client, json_logs, face_png):
    """The CPU work runs in worker threads; what it logs still names its request."""

    def logging_slots():
        class Slots:
            async def run(self, fn, *args):
                import anyio.to_thread

                def logged():
                    logging.getLogger("api.test").warning("from a worker thread")
                    return fn(*args)

                return await anyio.to_thread.run_sync(logged)

        return Slots()

    app.dependency_overrides[get_slots] = logging_slots
    response = await client.post("/predict", files={"image": ("a.png", face_png, "image/png")})
    assert response.status_code == 200
    (line,) = [line for line in json_logs() if line["logger"] == "api.test"]
    assert line["request_id"] == response.headers["X-Request-ID"]
