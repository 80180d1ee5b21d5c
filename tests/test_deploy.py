"""The deployment files, checked as far as a machine without a Docker engine can: docker-compose.yml
is validated by Debian's docker-compose 1.29 (when installed; CI installs it) and read for what it
promises; the Dockerfile and .dockerignore are read for theirs. No image is built here."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from api.core.settings import REPO_ROOT

COMPOSE = REPO_ROOT / "docker-compose.yml"
ENV_EXAMPLE = REPO_ROOT / ".env.example"
SECRET_NAME = re.compile(r"PASSWORD|TOKEN|SECRET|KEY", re.IGNORECASE)


# --- Dockerfile ------------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in (REPO_ROOT / "Dockerfile").read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        pending += " " + stripped.removesuffix("\\").strip()
        if not stripped.endswith("\\"):
            keyword, _, args = pending.strip().partition(" ")
            out.append((keyword.upper(), args.strip()))
            pending = ""
    assert not pending, "a continuation line ends the Dockerfile"
    return out


def final_stage(instructions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    starts = [i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM"]
    return instructions[starts[-1]:]


def test_the_image_is_slim_python_311_without_torch_and_with_mediapipe_as_the_makefile_installs_it():
    instructions = dockerfile_instructions()
    froms = [args for keyword, args in instructions if keyword == "FROM"]
    assert froms and all(re.match(r"python:3\.11-slim", f) for f in froms), froms
    runs = " ".join(args for keyword, args in instructions if keyword == "RUN")
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    runtime = [re.split(r"[<>=~\[ ]", d)[0] for d in project["dependencies"]]
    assert "onnxruntime" in runtime and "torch" not in runtime and "safetensors" not in runtime
    assert "torch" in " ".join(project["optional-dependencies"]["train"])
    assert "torch" not in runs and "[train]" not in runs  # the serving image runs the exported models
    makefile = (REPO_ROOT / "Makefile").read_text()
    mediapipe = re.search(r"--no-deps (mediapipe==\S+)", makefile)
    assert mediapipe and f"--no-deps {mediapipe.group(1)}" in runs
    assert ".[dev]" not in runs and "-e ." not in runs  # no dev extras, no editable install


def test_the_image_runs_as_a_user_of_its_own_with_a_healthcheck_and_serves_on_all_interfaces():
    stage = final_stage(dockerfile_instructions())
    keywords = [keyword for keyword, _ in stage]
    users = [args for keyword, args in stage if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert keywords.index("USER") < keywords.index("CMD")
    (healthcheck,) = [args for keyword, args in stage if keyword == "HEALTHCHECK"]
    assert "/healthz" in healthcheck and "curl" not in healthcheck and " CMD " in f" {healthcheck}"
    (cmd,) = [args for keyword, args in stage if keyword == "CMD"]
    assert yaml.safe_load(cmd) == ["python", "-m", "api", "serve", "--host", "0.0.0.0"]  # exec form


def test_the_dockerfile_holds_no_secret():
    for keyword, args in dockerfile_instructions():
        if keyword in ("ENV", "ARG"):
            for name in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=", args) + args.split()[:1]:
                assert not SECRET_NAME.search(name), f"{keyword} {args}"


def dockerignore_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as a regex: `**` any folders, `*` and `?` within one path part."""
    out = ""
    for token in re.split(r"(\*\*/|\*\*|\*|\?)", pattern):
        out += {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(token, re.escape(token))
    return re.compile(out)


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern that matches the path or one of its parent folders decides."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        regex = dockerignore_regex(pattern.removeprefix("!").strip("/"))
        if any(regex.fullmatch(p) for p in prefixes):
            ignored = not pattern.startswith("!")
    return ignored


@pytest.mark.parametrize("path, ignored", [
    (".venv/bin/python", True), ("data/pgdata/PG_VERSION", True), ("runs/r1/model.safetensors", True),
    (".git/HEAD", True), ("test-results/trace.zip", True), (".env", True), ("tests/conftest.py", True),
    ("bench/http_latency.py", True), ("api/__pycache__/main.cpython-311.pyc", True),
    ("ml/weights/cydral-resnet10-v1.safetensors", True),  # training source: the image serves the .onnx
    ("api/main.py", False), ("ml/weights/cydral-resnet10-v1.onnx", False), ("alembic/env.py", False),
    ("ml/weights/yunet_s_dynamic.onnx", False),  # the second face detector, read at start-up
    ("alembic.ini", False), ("pyproject.toml", False), ("frontend/index.html", False),
])
def test_the_build_context_holds_only_what_the_service_runs(path, ignored):
    patterns = [line.strip() for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    assert dockerignored(path, patterns) is ignored


# --- docker-compose.yml ----------------------------------------------------------------------------


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_migrates_once_the_database_is_healthy_and_starts_the_api_after():
    services = compose()["services"]
    assert set(services) == {"db", "migrate", "api"}
    db = services["db"]
    assert db["image"].startswith("postgres:")
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])
    volume, _, target = db["volumes"][0].partition(":")
    assert volume in compose()["volumes"] and target == "/var/lib/postgresql"  # named, where 18+ keeps data
    assert services["migrate"]["command"] == ["python", "-m", "api", "migrate"]
    assert services["migrate"]["depends_on"] == {"db": {"condition": "service_healthy"}}
    assert services["api"]["depends_on"] == {"db": {"condition": "service_healthy"},
                                             "migrate": {"condition": "service_completed_successfully"}}
    assert services["api"]["image"] == services["migrate"]["image"]  # one image, one build


def test_compose_takes_every_secret_from_the_environment():
    for name, service in compose()["services"].items():
        for key, value in (service.get("environment") or {}).items():
            if SECRET_NAME.search(key) or "DATABASE_URL" in key:
                assert "${" in str(value), f"{name}.{key} is written into the file"
    required = set(re.findall(r"\$\{(\w+):\?", COMPOSE.read_text()))
    assert required == {"POSTGRES_PASSWORD", "ADMIN_TOKEN"}
    documented = set(re.findall(r"^(\w+)=", ENV_EXAMPLE.read_text(), re.MULTILINE))
    assert set(re.findall(r"\$\{(\w+)", COMPOSE.read_text())) <= documented


DOCKER_COMPOSE = shutil.which("docker-compose")
needs_compose = pytest.mark.skipif(DOCKER_COMPOSE is None, reason="docker-compose is not installed "
                                   "(apt-get install -y --no-install-recommends docker-compose; CI installs it)")


def run_compose(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(folder)}  # nothing else leaks in
    assert DOCKER_COMPOSE is not None
    return subprocess.run([DOCKER_COMPOSE, "-f", "docker-compose.yml", *args], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=60)


@needs_compose
def test_compose_file_validates_with_the_example_env(tmp_path):
    """`cp .env.example .env && docker-compose -f docker-compose.yml config -q`, in a copy of the files."""
    shutil.copy(COMPOSE, tmp_path / "docker-compose.yml")
    shutil.copy(ENV_EXAMPLE, tmp_path / ".env")
    checked = run_compose(tmp_path, "config", "-q")
    assert checked.returncode == 0, checked.stderr
    resolved = yaml.safe_load(run_compose(tmp_path, "config").stdout)["services"]
    password = re.search(r"^POSTGRES_PASSWORD=(.*)$", ENV_EXAMPLE.read_text(), re.MULTILINE).group(1)
    assert resolved["api"]["environment"]["DATABASE_URL"] == (
        f"postgresql://whatsmyage:{password}@db:5432/whatsmyage")
    assert resolved["db"]["environment"]["POSTGRES_PASSWORD"] == password


@needs_compose
def test_compose_refuses_to_start_without_its_secrets(tmp_path):
    shutil.copy(COMPOSE, tmp_path / "docker-compose.yml")
    (tmp_path / ".env").write_text("")
    refused = run_compose(tmp_path, "config", "-q")
    assert refused.returncode != 0
    assert "POSTGRES_PASSWORD" in refused.stderr or "ADMIN_TOKEN" in refused.stderr


def test_ci_installs_docker_compose_so_that_the_validation_runs_there():
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    assert any("apt-get install" in line and "docker-compose" in line for line in ci.splitlines())
