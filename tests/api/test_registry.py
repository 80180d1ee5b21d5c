"""The model registry (api/learning/registry.py) and its routes: GET /model, GET /models, POST /models/{v}/activate.

Real Postgres; each test's changes are rolled back (the app registered the shipped models, for real,
when it started). The app's own worker follows only committed activations, so these tests never swap
the model it serves: tests/api/test_hotswap.py does, on a server of its own.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import onnx
import pytest
from asgi_lifespan import LifespanManager
from sqlmodel import col, select

from api.core.errors import ModelExists, ModelIsActive, ModelNotFound
from api.core.settings import Settings
from api.learning import registry
from api.main import create_app
from api.storage.tables import AuditEvent, ModelVersion
from ml.paths import WEIGHTS_DIR
from ml.serving.runtime import read_metadata
from tests.api.conftest import ADMIN_TOKEN, SHIPPED_VERSION, assert_problem
from tests.test_runtime import SHIPPED

pytestmark = pytest.mark.anyio

SHIPPED_FILES = [WEIGHTS_DIR / f"{v}.onnx" for v in SHIPPED]  # the age models; the face detector's ONNX file is not one
OTHER = "resnet10-utkface-v2"  # a second shipped model: a candidate on a first start
BANDS = ["0-12", "13-19", "20-39", "40-59", "60-79", "80+"]


def validation_figures(version: str) -> dict:
    return json.loads((WEIGHTS_DIR / f"{version}.eval.json").read_text())[version]


def copy_model(version: str, folder: Path, *, rename: bool = True) -> Path:
    """A shipped model's file under another version's name, as retrain writes one (its metadata names
    `version`), or, with `rename=False`, still naming the shipped one."""
    path = folder / f"{version}.onnx"
    if not rename:
        shutil.copyfile(WEIGHTS_DIR / f"{OTHER}.onnx", path)
        return path
    model = onnx.load(str(WEIGHTS_DIR / f"{OTHER}.onnx"))
    next(p for p in model.metadata_props if p.key == "version").value = version
    onnx.save(model, str(path))
    return path


async def add_copy(session, tmp_path: Path, version: str = "retrain-test", *, sha256: str | None = None,
                   rename: bool = True) -> ModelVersion:
    """A retrained candidate (a shipped model's network under a new name), with figures."""
    path = copy_model(version, tmp_path, rename=rename)
    return await registry.add_candidate(
        session, version=version, weights_path=path, sha256=sha256 or registry.file_sha256(path),
        parent_version=SHIPPED_VERSION, created_by="retrain",
        trained_on={"data": ["utkface"], "submissions": 3, "newest_submission": "2026-12-06T01:00:00+00:00",
                    "submission_ids": [1, 2, 3], "held_out_submissions": 1},
        evaluation={"validation": {"n": 10, "mae": 5.0, "by_band": {"80+": [4, 9.0], "0-12": [6, 2.0]},
                                   "coverage": 0.7, "coverage_by_band": {"80+": [4, 0.5], "0-12": [6, 0.833]}},
                    "held_out": {"n": 1, "mae": float("nan"), "by_band": {}, "coverage": float("nan")},
                    "active_validation": None, "active_held_out": None, "rule": {"promoted": False, "why": "test"}})


async def test_the_shipped_models_are_registered_once_with_their_file_hash_and_validation_figures(client, session):
    rows = {r.version: r for r in await registry.all_versions(session)}
    assert {p.stem for p in SHIPPED_FILES} <= set(rows)
    assert not [v for v in rows if v.startswith("yunet")]  # the face detector is not an age model
    for path in SHIPPED_FILES:
        row = rows[path.stem]
        assert read_metadata(path)["version"] == row.version  # the file's name is its version
        assert row.created_by == "shipped" and registry.weights_file(row) == path
        assert row.sha256 == registry.file_sha256(path)
        assert row.evaluation["validation"]["mae"] == pytest.approx(validation_figures(row.version)["mae"])
        assert row.trained_on["data"] == ["utkface"] and row.trained_on["submissions"] == 0
    assert [r.version for r in rows.values() if r.state == "active"] == [SHIPPED_VERSION]

    await registry.ensure_shipped(session)  # again, as every start does
    assert len(await registry.all_versions(session)) == len(rows)
    assert (await registry.active(session)).version == SHIPPED_VERSION


async def test_a_candidate_goes_round_the_registry(client, session, tmp_path):
    added = await add_copy(session, tmp_path)
    row = await registry.get(session, "retrain-test")
    assert row is not None and row.state == "candidate" and row.parent_version == SHIPPED_VERSION
    assert row.trained_on["submission_ids"] == [1, 2, 3] and row.created_by == "retrain"
    assert row.evaluation["held_out"]["mae"] is None  # NaN has no place in JSON: stored as null
    assert (await registry.all_versions(session))[0].version == added.version  # newest first
    with pytest.raises(ModelExists):
        await add_copy(session, tmp_path)

    rejected = await registry.reject(session, "retrain-test", reason="worse on validation")
    assert (rejected.state, rejected.reason) == ("rejected", "worse on validation")
    retired = await registry.retire(session, "retrain-test", reason="trained on a deleted photo")
    assert (retired.state, retired.reason) == ("retired", "trained on a deleted photo")
    with pytest.raises(ModelIsActive):
        await registry.retire(session, SHIPPED_VERSION, reason="no")
    with pytest.raises(ModelNotFound):
        await registry.reject(session, "no-such-model", reason="no")


async def test_get_model_is_public_and_describes_the_active_version(client):
    response = await client.get("/model")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "public, max-age=5"
    body = response.json()
    assert (body["version"], body["state"], body["created_by"]) == (SHIPPED_VERSION, "active", "shipped")
    assert body["activated_at"] and body["created_at"]
    assert body["trained_on"] == {"data": ["utkface"], "submissions": 0, "newest_submission": None}
    expected = validation_figures(SHIPPED_VERSION)
    validation = body["evaluation"]["validation"]
    assert validation["faces"] == expected["n"] and validation["mae"] == pytest.approx(expected["mae"])
    assert validation["coverage"] == pytest.approx(expected["coverage"])
    assert [b["band"] for b in validation["by_band"]] == BANDS  # in age order
    assert [b["mae"] for b in validation["by_band"]] == pytest.approx([expected["by_band"][b][1] for b in BANDS])
    # the interval's coverage by true and by predicted age band, with Wilson intervals, and on degraded copies
    for b in validation["by_band"]:
        low, high = b["coverage_ci"]
        assert low <= b["coverage"] <= high
        assert b["coverage"] == pytest.approx(expected["coverage_by_band"][b["band"]][1])
    predicted = validation["coverage_by_predicted_band"]
    assert [b["band"] for b in predicted] == BANDS and sum(b["faces"] for b in predicted) == expected["n"]
    assert validation["median_width"] == pytest.approx(expected["median_width"])
    degraded = {d["degradation"]: d for d in validation["degraded"]}
    assert set(degraded) == {"px40", "blur2", "gray", "jpeg15"}
    assert [b["band"] for b in degraded["px40"]["coverage_by_band"]] == BANDS
    assert degraded["blur2"]["coverage"] == pytest.approx(expected["degraded"]["blur2"]["coverage"])
    assert body["evaluation"]["held_out_submissions"] is None
    history = body["history"]
    assert {h["version"] for h in history} >= {p.stem for p in SHIPPED_FILES}
    assert [h["created_at"] for h in history] == sorted((h["created_at"] for h in history), reverse=True)
    assert next(h for h in history if h["version"] == SHIPPED_VERSION)["mae"] == pytest.approx(expected["mae"])


async def test_get_model_shows_a_retrained_version_with_its_held_out_figures(client, session, tmp_path):
    await add_copy(session, tmp_path)
    await registry.activate(session, "retrain-test", actor="system")
    body = (await client.get("/model")).json()
    assert body["version"] == "retrain-test" and body["created_by"] == "retrain"
    assert body["trained_on"] == {"data": ["utkface"], "submissions": 3, "newest_submission": "2026-12-06T01:00:00Z"}
    assert body["evaluation"]["validation"]["by_band"] == [
        {"band": "0-12", "faces": 6, "mae": 2.0, "coverage": 0.833, "coverage_ci": None},
        {"band": "80+", "faces": 4, "mae": 9.0, "coverage": 0.5, "coverage_ci": None}]  # in age order; no CI stored
    assert body["evaluation"]["held_out_submissions"] is None  # its MAE was not a number
    assert "submission_ids" not in response_text(body)  # public: counts, never which submissions


def response_text(body: dict) -> str:
    return json.dumps(body)


async def test_get_models_is_for_admins_and_lists_every_column(client, admin):
    assert_problem(await client.get("/models"), 401, "not_authenticated")
    assert_problem(await client.get("/models", headers={"Authorization": "Bearer wrong"}), 401, "invalid_token")
    response = await client.get("/models", headers=admin)
    assert response.status_code == 200
    models = response.json()["models"]
    shipped = next(m for m in models if m["version"] == SHIPPED_VERSION)
    assert set(shipped) == set(ModelVersion.model_fields)
    assert shipped["sha256"] == registry.file_sha256(WEIGHTS_DIR / f"{SHIPPED_VERSION}.onnx")
    assert shipped["evaluation"]["validation"]["by_band"]["80+"][0] > 0


async def test_activating_an_unknown_version_is_404(client, admin):
    assert_problem(await client.post("/models/no-such-model/activate", headers=admin), 404, "model_not_found")
    assert_problem(await client.post(f"/models/{'x' * 129}/activate", headers=admin), 422, "validation_error")
    assert_problem(await client.post(f"/models/{OTHER}/activate"), 401, "not_authenticated")


async def test_a_rejected_version_is_activated_only_when_forced(client, session, admin):
    await registry.reject(session, OTHER, reason="worse on held-out submissions")
    body = assert_problem(await client.post(f"/models/{OTHER}/activate", headers=admin), 409, "model_rejected")
    assert "worse on held-out submissions" in body["detail"]
    assert (await registry.active(session)).version == SHIPPED_VERSION  # nothing changed
    response = await client.post(f"/models/{OTHER}/activate", params={"force": "true"}, headers=admin)
    assert response.status_code == 200 and response.json()["state"] == "active"
    event = (await session.exec(select(AuditEvent).where(col(AuditEvent.model_version) == OTHER))).one()
    assert event.detail == {"previous": SHIPPED_VERSION, "forced": True}


async def test_a_missing_or_altered_weights_file_is_never_activated(client, session, admin, tmp_path):
    await add_copy(session, tmp_path, "altered", sha256="0" * 64)
    await add_copy(session, tmp_path, "missing")
    (tmp_path / "missing.onnx").unlink()
    for version in ("altered", "missing"):
        for params in ({}, {"force": "true"}):
            response = await client.post(f"/models/{version}/activate", params=params, headers=admin)
            assert_problem(response, 409, "model_file_invalid")
    # A file whose recorded version is another one's: answers would carry the wrong name.
    await add_copy(session, tmp_path, "misnamed", rename=False)
    assert_problem(await client.post("/models/misnamed/activate", headers=admin), 409, "model_file_invalid")
    assert (await registry.active(session)).version == SHIPPED_VERSION
    events = await session.exec(select(AuditEvent).where(col(AuditEvent.action) == "model.activate"))
    assert events.all() == []


async def test_activate_then_roll_back_by_activating_the_previous_version(client, session, admin):
    response = await client.post(f"/models/{OTHER}/activate", headers=admin)
    assert response.status_code == 200
    assert (response.json()["version"], response.json()["state"]) == (OTHER, "active")
    assert (await client.get("/model")).json()["version"] == OTHER
    previous = await registry.get(session, SHIPPED_VERSION)
    assert previous is not None
    await session.refresh(previous)
    assert (previous.state, previous.reason) == ("retired", f"replaced by {OTHER}")

    response = await client.post(f"/models/{SHIPPED_VERSION}/activate", headers=admin)  # the roll-back
    assert response.status_code == 200
    assert (await client.get("/model")).json()["version"] == SHIPPED_VERSION
    other = await registry.get(session, OTHER)
    assert other is not None
    await session.refresh(other)
    assert (other.state, other.reason) == ("retired", f"replaced by {SHIPPED_VERSION}")
    assert len([r for r in await registry.all_versions(session) if r.state == "active"]) == 1
    events = (await session.exec(select(AuditEvent).where(col(AuditEvent.action) == "model.activate")
                                 .order_by(col(AuditEvent.id)))).all()
    assert [(e.model_version, e.actor, e.detail["previous"]) for e in events] == [
        (OTHER, "admin", SHIPPED_VERSION), (SHIPPED_VERSION, "admin", OTHER)]
    again = await client.post(f"/models/{SHIPPED_VERSION}/activate", headers=admin)  # already active: no change
    assert again.status_code == 200 and again.json()["activated_at"] == response.json()["activated_at"]


async def test_the_registry_survives_restarts_and_each_start_serves_the_active_version(scratch_url, tmp_path,
                                                                                         face_png):
    settings = Settings(_env_file=None, database_url=scratch_url, admin_token=ADMIN_TOKEN, data_dir=tmp_path,
                        frontend_dir=tmp_path / "none", concurrency_slots=1, rate_limit_per_minute=0)
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

    async def start_and(step):
        app = create_app(settings)
        async with LifespanManager(app, startup_timeout=120) as manager:
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                return await step(client)

    async def first(client):
        rows = (await client.get("/models", headers=admin)).json()["models"]
        assert (await client.post(f"/models/{OTHER}/activate", headers=admin)).status_code == 200
        return rows

    async def second(client):
        predicted = await client.post("/predict", files={"image": ("a.png", face_png, "image/png")})
        return (await client.get("/models", headers=admin)).json()["models"], predicted.json()["model_version"]

    before = await start_and(first)
    after, served_version = await start_and(second)
    assert [r["version"] for r in after] == [r["version"] for r in before]  # registered once
    assert {r["version"]: r["sha256"] for r in after} == {r["version"]: r["sha256"] for r in before}
    assert [r["version"] for r in after if r["state"] == "active"] == [OTHER]  # not reset by the start
    assert served_version == OTHER  # the new process serves the active version, not WMA_AGE_WEIGHTS
