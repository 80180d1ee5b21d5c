"""The serving runtime (ONNX Runtime) against the torch reference: the same ages, the same metadata,
no torch in the serving process, threads that fit the machine."""

from __future__ import annotations

import contextlib
import hashlib
import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from ml.paths import DEFAULT_AGE_WEIGHTS, SPLIT_FILE, WEIGHTS_DIR
from ml.serving import runtime
from ml.serving.predictor import Predictor
from ml.training.data import Split, parse_name
from tests.conftest import FIXTURES

ROOT = Path(__file__).resolve().parent.parent
UTKFACE = ROOT.parent / "shared" / "data" / "utkface" / "images"
SHIPPED = ["resnet10x3-utkface-v2", "resnet10-utkface-v3", "resnet10-utkface-v2", "cydral-resnet10-v1"]
TOLERANCE_YEARS = 0.05


def test_serving_process_never_imports_torch():
    code = """
import sys
import api.main
from api.core.settings import Settings
predictor = api.main.load_predictor(Settings(_env_file=None))
predictor.predict(open(sys.argv[1], "rb").read())
predictor.close()
print(sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "safetensors", "onnx", "matplotlib")))
"""
    out = subprocess.run([sys.executable, "-c", code, str(FIXTURES / "astronaut.png")], cwd=ROOT,
                         capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_the_served_default_is_an_exported_file_made_from_the_shipped_weights():
    assert DEFAULT_AGE_WEIGHTS.suffix == ".onnx"
    for name in SHIPPED:
        meta = runtime.read_metadata(WEIGHTS_DIR / f"{name}.onnx")
        source = WEIGHTS_DIR / meta["exported_from"]
        assert source == WEIGHTS_DIR / f"{name}.safetensors"
        assert meta["exported_from_sha256"] == hashlib.sha256(source.read_bytes()).hexdigest(), (
            f"{name}.onnx is stale: run `python -m ml export {source} --out ml/weights/{name}.onnx`")
        assert meta["version"] == name


def test_training_weights_are_refused_with_how_to_export_them():
    with pytest.raises(runtime.NotExported, match=r"python -m ml export .*resnet10-utkface-v2\.safetensors --out"):
        runtime.load_age_model(WEIGHTS_DIR / "resnet10-utkface-v2.safetensors")


def idle_machine() -> float:
    return 0.0  # load average: nothing else runs


@pytest.mark.parametrize(("cpus", "in_flight", "width"), [(2, 1, 2), (2, 2, 1), (2, 5, 1), (16, 1, 16), (16, 4, 13)])
def test_a_photo_spreads_only_over_cpus_no_other_photo_holds(cpus, in_flight, width):
    share = runtime.CpuShare(cpus, load=idle_machine)
    with contextlib.ExitStack() as stack:
        for _ in range(in_flight):
            stack.enter_context(share.photo())
        assert share.width() == width
        assert in_flight + width - 1 <= max(cpus, in_flight)  # threads in use never exceed the CPUs
    assert share.width() == cpus


@pytest.mark.parametrize(("load", "width"), [(0.3, 2), (1.2, 1), (7.5, 1)])
def test_a_photo_does_not_spread_over_cpus_other_processes_keep_busy(load, width):
    share = runtime.CpuShare(2, load=lambda: load)
    with share.photo():
        assert share.width() == width


def test_available_cpus_follow_omp_num_threads_when_set(monkeypatch):
    """Several worker processes on one machine: each is told its share."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert runtime.available_cpus() == 1
    assert runtime.CpuShare().width() == 1


def age_step_threads() -> int:
    return sum(t.name.startswith("age-step") for t in threading.enumerate())


@pytest.mark.parametrize("name", SHIPPED)
def test_an_age_step_spread_over_threads_gives_the_same_ages(predictor, name):
    chips = fixture_chips(predictor)
    alone = runtime.load_age_model(WEIGHTS_DIR / f"{name}.onnx", runtime.CpuShare(1))
    spread = runtime.load_age_model(WEIGHTS_DIR / f"{name}.onnx", runtime.CpuShare(3, load=idle_machine))
    for batch in (chips[:1], chips, np.concatenate([chips] * 3)):  # split by members, then by chips
        want = [(e.age, e.low, e.high) for e in alone.estimate(batch)]
        got = [(e.age, e.low, e.high) for e in spread.estimate(batch)]
        assert np.abs(np.array(want) - np.array(got)).max() < 1e-6
    spread.cpus.close()


def test_a_lone_photo_uses_helper_threads_and_photos_under_load_do_not(predictor):
    chips = fixture_chips(predictor)[:1]
    share = runtime.CpuShare(2, load=idle_machine)
    model = runtime.load_age_model(WEIGHTS_DIR / "resnet10x3-utkface-v2.onnx", share)  # 3 members
    before = age_step_threads()
    with share.photo(), share.photo():  # two photos in flight on two CPUs: no spare CPU
        model.estimate(chips)
    assert age_step_threads() == before
    with share.photo():
        model.estimate(chips)
    assert age_step_threads() == before + 1
    share.close()


def test_interval_of_a_known_distribution():
    ages = np.arange(101, dtype=np.float64)
    probs = np.zeros((1, 101))
    probs[0, 40:50] = 0.1  # uniform over the years 39.5 .. 49.5
    (d,) = runtime.summarise(probs, ages, coverage=0.8)
    assert d.age == pytest.approx(44.5)
    assert (d.low, d.high) == pytest.approx((40.5, 48.5))
    assert d.spread == pytest.approx(np.sqrt(8.25), rel=1e-6)


# --- the torch reference (the training extra) -------------------------------------------------------


def fixture_chips(predictor: Predictor) -> np.ndarray:
    chips = []
    for name in ("astronaut.png", "cameraman.png"):
        img = predictor.decode((FIXTURES / name).read_bytes())
        chips.append(predictor.chips(img, predictor.detector.detect(img.rgb)))
    return np.concatenate(chips)


@pytest.fixture(scope="module")
def validation_chips(predictor: Predictor) -> np.ndarray:
    """Chips of about 200 UTKFace validation faces, made by the served pipeline (skipped without the data)."""
    if not UTKFACE.is_dir():
        pytest.skip(f"{UTKFACE} is not here")
    split = Split.read(SPLIT_FILE)
    names = sorted(n for n, side in split.assignment.items() if side == "val" and parse_name(n))[::9][:200]
    chips = []
    for name in names:
        path = UTKFACE / name
        if path.exists():
            img = predictor.decode(path.read_bytes())
            faces = predictor.detector.detect(img.rgb)
            if faces:
                chips.append(predictor.chips(img, faces[:1]))
    assert len(chips) > 150
    return np.concatenate(chips)


def compare(name: str, chips: np.ndarray) -> None:
    agemodel = pytest.importorskip("ml.training.agemodel")  # torch: the training extra
    reference = agemodel.load_age_model(WEIGHTS_DIR / f"{name}.safetensors")
    served = runtime.load_age_model(WEIGHTS_DIR / f"{name}.onnx")
    assert served.version == reference.version
    want = reference.estimate(chips)
    got = served.estimate(chips)
    for field in ("age", "low", "high", "spread"):
        diff = np.abs(np.array([getattr(e, field) for e in want]) - np.array([getattr(e, field) for e in got]))
        assert diff.max() < TOLERANCE_YEARS, (name, field, float(diff.max()))


@pytest.mark.parametrize("name", SHIPPED)
def test_served_ages_match_the_torch_reference_on_fixture_chips(predictor, name):
    chips = fixture_chips(predictor)
    assert len(chips) == 2
    compare(name, chips)


@pytest.mark.slow
@pytest.mark.parametrize("name", SHIPPED)
def test_served_ages_match_the_torch_reference_on_utkface_validation_chips(validation_chips, name):
    compare(name, validation_chips)


def test_export_writes_one_file_with_the_metadata_and_the_same_ages(predictor, tmp_path):
    pytest.importorskip("torch")
    from ml.training.onnx_export import export

    source = WEIGHTS_DIR / "resnet10-utkface-v2.safetensors"
    served = export(source, tmp_path / "model.onnx")
    meta = runtime.read_metadata(tmp_path / "model.onnx")
    for key in ("version", "arch", "temperature", "point_temperature", "mirror", "residuals", "ages", "members"):
        assert key in meta, key
    assert json.loads(meta["mirror"]) is True and len(json.loads(meta["ages"])) == 117
    assert meta["exported_from_sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert not list(tmp_path.glob("*.tmp*"))
    # The shipped file is what the export writes from the shipped weights, byte for byte.
    assert (tmp_path / "model.onnx").read_bytes() == (WEIGHTS_DIR / "resnet10-utkface-v2.onnx").read_bytes()
    chips = fixture_chips(predictor)
    reference = pytest.importorskip("ml.training.agemodel").load_age_model(source)
    assert [e.age for e in served.estimate(chips)] == pytest.approx([e.age for e in reference.estimate(chips)],
                                                                    abs=1e-3)
