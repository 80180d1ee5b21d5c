"""`python -m api serve`: uvicorn with our JSON logs and without its access log, one process or
several; with several, the embedded Postgres shared by the workers and /metrics adding up all of them."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest
import uvicorn

from api.__main__ import serve
from api.core.logs import log_config
from api.core.settings import REPO_ROOT, Settings
from bench.common import free_port
from tests.served import stop_embedded, wait_healthy

FIXTURES = Path(__file__).parent / "fixtures"


def test_one_worker_serves_the_app_object_with_json_logs_and_no_uvicorn_access_log(monkeypatch):
    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: calls.append((app, options)))
    serve(Settings(_env_file=None, frontend_dir=Path("/nonexistent"), port=9123))
    ((app, options),) = calls
    assert not isinstance(app, str)
    assert options == {"host": "127.0.0.1", "port": 9123, "log_config": log_config(), "access_log": False}


def test_several_workers_get_the_factory_and_a_multiprocess_metrics_folder_for_the_run(monkeypatch):
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    seen = {}

    def run(app, **options):
        seen.update(app=app, options=options, folder=os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        assert seen["folder"] and Path(seen["folder"]).is_dir()

    monkeypatch.setattr(uvicorn, "run", run)
    serve(Settings(_env_file=None, workers=3))
    assert seen["app"] == "api.main:create_app"
    assert seen["options"]["factory"] is True and seen["options"]["workers"] == 3
    assert seen["options"]["access_log"] is False and seen["options"]["log_config"] == log_config()
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ and not Path(seen["folder"]).exists()


@pytest.mark.slow
def test_two_workers_share_the_embedded_postgres_add_up_their_metrics_and_log_json_lines():
    """No migration first: /predict, /healthz and /metrics need no table, and it saves seconds."""
    data = Path(tempfile.mkdtemp(prefix="whatsmyage-workers-"))  # outside pytest's temp root: see tests/api/conftest
    metrics_dir = data / "metrics"
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "ADMIN_TOKEN", "OMP_NUM_THREADS")}
    env |= {"WMA_DATA_DIR": str(data), "WMA_FRONTEND_DIR": str(data / "none"), "PROMETHEUS_MULTIPROC_DIR":
            str(metrics_dir), "WMA_CONCURRENCY_SLOTS": "1", "OMP_NUM_THREADS": "1",
            "WMA_RATE_LIMIT_PER_MINUTE": "0"}
    port = free_port()
    out = open(data / "stdout", "wb")  # noqa: SIM115
    try:
        server = subprocess.Popen([sys.executable, "-m", "api", "serve", "--port", str(port), "--workers", "2"],
                                  cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.DEVNULL)
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 120
            while True:  # both workers up: each wrote its metric files
                assert server.poll() is None, "the server exited"
                assert time.monotonic() < deadline, "the workers did not start"
                pids = {p.stem.rsplit("_", 1)[-1] for p in metrics_dir.glob("*.db")}
                try:
                    if len(pids) >= 2 and httpx.get(url + "/healthz", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.3)
            photo = (FIXTURES / "astronaut.png").read_bytes()
            sent = [f"workers-test-{i}" for i in range(6)]
            for rid in sent:  # a connection each, so that both workers take some
                with httpx.Client(base_url=url, timeout=30) as client:
                    r = client.post("/predict", files={"image": ("a.png", photo, "image/png")},
                                    headers={"X-Request-ID": rid})
                    assert r.status_code == 200 and r.headers["X-Request-ID"] == rid
            metrics = httpx.get(url + "/metrics", timeout=10).text
            assert 'whatsmyage_http_requests_total{method="POST",route="/predict",status="200"} 6.0' in metrics
            assert 'whatsmyage_faces_per_photo_count{endpoint="predict"} 6.0' in metrics
            assert {p.stem.rsplit("_", 1)[-1] for p in metrics_dir.glob("counter_*.db")} == pids
        finally:
            server.send_signal(signal.SIGTERM)
            assert server.wait(60) == 0
        assert not (data / "pgdata" / "postmaster.pid").exists()  # the last worker out stopped it
        out.close()
        lines = [json.loads(line) for line in (data / "stdout").read_text().splitlines()]  # every line is JSON
        access = {line["request_id"]: line for line in lines if line["logger"] == "api.access"}
        assert set(sent) <= set(access) and all(access[rid]["route"] == "/predict" for rid in sent)
        assert not [line for line in lines if line["logger"] == "uvicorn.access"]
        assert sum(line["message"] == "app stopped" for line in lines) == 2
    finally:
        out.close()
        shutil.rmtree(data, ignore_errors=True)


@pytest.mark.slow
def test_a_first_start_on_an_empty_data_folder_migrates_it_and_both_streams_carry_json_lines_only():
    """No `migrate` first: the embedded database is migrated on start. MediaPipe's LiteRT, XNNPACK and absl
    write about 110 plain lines to fd 2 at start and first photo; they arrive as `stderr` records."""
    data = Path(tempfile.mkdtemp(prefix="whatsmyage-first-start-"))  # outside pytest's temp root
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "ADMIN_TOKEN", "OMP_NUM_THREADS",
                                                             "PROMETHEUS_MULTIPROC_DIR")}
    env |= {"WMA_DATA_DIR": str(data), "WMA_FRONTEND_DIR": str(data / "none"), "WMA_CONCURRENCY_SLOTS": "1",
            "OMP_NUM_THREADS": "1"}
    port = free_port()
    try:
        with open(data / "stdout", "wb") as out, open(data / "stderr", "wb") as err:
            server = subprocess.Popen([sys.executable, "-m", "api", "serve", "--port", str(port)],
                                      cwd=REPO_ROOT, env=env, stdout=out, stderr=err)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_healthy(url, server, 120)
            photo = (FIXTURES / "astronaut.png").read_bytes()
            assert httpx.post(url + "/predict", files={"image": ("a.png", photo, "image/png")},
                              timeout=30).status_code == 200
            model = httpx.get(url + "/model", timeout=10)
            assert model.status_code == 200 and model.json()["state"] == "active"  # the registry's table exists
        finally:
            server.send_signal(signal.SIGTERM)
            assert server.wait(60) in (0, -signal.SIGTERM)  # one process: uvicorn re-raises the signal when done
        assert (data / "stderr").read_bytes() == b""
        lines = [json.loads(line) for line in (data / "stdout").read_text().splitlines()]  # every line is JSON
        assert any(line["logger"] == "alembic.runtime.migration" for line in lines)
        assert not [line for line in lines if line["level"] in ("WARNING", "ERROR", "CRITICAL")], lines
    finally:
        stop_embedded(data / "pgdata")
        shutil.rmtree(data, ignore_errors=True)
