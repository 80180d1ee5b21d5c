"""The app as `make run` runs it: migrations, the embedded Postgres, settings, the UI beside the API."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import anyio
import httpx
import pytest
from alembic import command
from asgi_lifespan import LifespanManager

from api.__main__ import migrate
from api.core.settings import REPO_ROOT, Settings
from api.main import create_app
from api.storage import db, embedded
from ml.serving.runtime import NotExported
from tests.api.conftest import ADMIN_TOKEN, assert_problem

UI = '<!doctype html><html><head><script type="module" src="app.js"></script></head><body></body></html>'


@pytest.mark.anyio
async def test_app_boots_like_make_run_and_stops_its_embedded_postgres(face_png):
    data = Path(tempfile.mkdtemp(prefix="whatsmyage-smoke-"))  # outside pytest's temp root: see conftest
    try:
        ui = data / "ui"
        ui.mkdir()
        (ui / "index.html").write_text(UI)
        settings = Settings(_env_file=None, database_url=None, data_dir=data, admin_token=ADMIN_TOKEN,
                            frontend_dir=ui)
        postmaster = data / "pgdata" / "postmaster.pid"

        await anyio.to_thread.run_sync(migrate, settings)  # `make migrate`
        assert (data / "pgdata" / "PG_VERSION").exists() and not postmaster.exists()

        app = create_app(settings)  # `make run`
        async with LifespanManager(app, startup_timeout=120, shutdown_timeout=30) as manager:
            assert postmaster.exists()
            transport = httpx.ASGITransport(app=manager.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                assert (await client.get("/healthz")).json()["database"] == "ok"
                created = await client.post(
                    "/submissions", data={"first_name": "Eileen", "true_age": "42", "consent": "yes"},
                    files={"image": ("me.png", face_png, "image/png")})
                assert created.status_code == 201
                listed = await client.get("/submissions", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
                assert [i["id"] for i in listed.json()["items"]] == [created.json()["id"]]

                page = await client.get("/")
                assert page.status_code == 200 and 'type="module"' in page.text
                assert page.headers["content-type"].startswith("text/html")
                # the UI takes only what the API leaves: errors keep their shape
                assert_problem(await client.get("/predict"), 405, "method_not_allowed")
                assert_problem(await client.get("/nope", headers={"Accept": "text/html"}), 404, "not_found")
                assert_problem(await client.post("/"), 405, "method_not_allowed")
        assert not postmaster.exists()  # stopped with the app
    finally:
        shutil.rmtree(data, ignore_errors=True)


def test_migrations_match_the_models(migrated_url):
    command.check(db.migrations_config(migrated_url))  # raises if autogenerate would change anything


@pytest.mark.anyio
async def test_without_a_frontend_folder_the_api_still_serves_and_root_is_404(client):
    assert_problem(await client.get("/"), 404, "not_found")


@pytest.mark.anyio
@pytest.mark.parametrize("origins", [[], ["https://ui.example"]])
async def test_cors_is_off_unless_origins_are_configured(origins):
    app = create_app(Settings(_env_file=None, cors_origins=origins, frontend_dir=Path("/nonexistent")))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        response = await client.options("/predict", headers={
            "Origin": "https://ui.example", "Access-Control-Request-Method": "POST"})
    allowed = response.headers.get("access-control-allow-origin")
    assert allowed == ("https://ui.example" if origins else None)


def test_settings_come_from_the_documented_environment_names(monkeypatch):
    env = {"DATABASE_URL": "postgres://u@db:5432/wma", "ADMIN_TOKEN": "t0k3n-0123456789abcdef0123456789abcdef",
           "WMA_MAX_UPLOAD_BYTES": "1000",
           "WMA_MAX_IMAGE_PIXELS": "2000", "WMA_MAX_FACES": "3", "WMA_CONCURRENCY_SLOTS": "4",
           "WMA_SLOT_WAIT_SECONDS": "0.5", "WMA_DATA_DIR": "/srv/data", "WMA_CORS_ORIGINS": "https://a, https://b",
           "WMA_FRONTEND_DIR": "/srv/ui", "WMA_HOST": "0.0.0.0", "WMA_PORT": "9000"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    s = Settings(_env_file=None)
    assert db.async_url(s.database_url or "") == "postgresql+asyncpg://u@db:5432/wma"
    assert s.admin_token_value == "t0k3n-0123456789abcdef0123456789abcdef"
    assert (s.max_upload_bytes, s.max_image_pixels, s.max_faces, s.concurrency_slots) == (1000, 2000, 3, 4)
    assert (s.slot_wait_seconds, s.data_dir, s.frontend_dir) == (0.5, Path("/srv/data"), Path("/srv/ui"))
    assert (s.cors_origins, s.host, s.port) == (["https://a", "https://b"], "0.0.0.0", 9000)
    config_page = (REPO_ROOT / "docs" / "configuration.md").read_text()
    documented = set(re.findall(r"`((?:WMA_)?[A-Z_]+)`", config_page))
    assert set(env) <= documented, set(env) - documented


def test_defaults_are_safe(monkeypatch):
    for name in ("DATABASE_URL", "ADMIN_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    s = Settings(_env_file=None)
    assert s.database_url is None and s.admin_token_value is None and s.cors_origins == []
    assert s.max_upload_bytes == 10 * 1024 * 1024 and s.host == "127.0.0.1" and s.port == 8000
    assert Settings(_env_file=None, admin_token="").admin_token_value is None


def test_a_crashed_process_does_not_keep_the_embedded_postgres_registered(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    handles = tmp_path / ".handle_pids.json"
    handles.write_text(json.dumps([dead.pid, os.getpid()]))
    embedded.forget_dead_handles(tmp_path)
    assert json.loads(handles.read_text()) == [os.getpid()]


def test_age_weights_setting_chooses_the_served_model():
    from api.main import load_predictor
    from ml.paths import WEIGHTS_DIR

    settings = Settings(_env_file=None, age_weights=WEIGHTS_DIR / "cydral-resnet10-v1.onnx")
    with load_predictor(settings) as predictor:
        assert predictor.version == "cydral-resnet10-v1"
        assert predictor.predict((Path(__file__).parent.parent / "fixtures" / "astronaut.png").read_bytes()).faces


@pytest.mark.anyio
async def test_training_weights_are_refused_at_start_up_with_how_to_export_them(tmp_path):
    from ml.paths import WEIGHTS_DIR

    weights = WEIGHTS_DIR / "cydral-resnet10-v1.safetensors"
    app = create_app(Settings(_env_file=None, data_dir=tmp_path, age_weights=weights))
    with pytest.raises(NotExported, match=r"python -m ml export .*cydral-resnet10-v1\.safetensors --out"):
        async with LifespanManager(app):
            pass
