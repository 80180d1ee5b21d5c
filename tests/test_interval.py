"""The calibrated age interval (ml.serving.interval, ml.serving.quality, ml.training.conformal), real model."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest

from ml.paths import DEFAULT_AGE_WEIGHTS, WEIGHTS_DIR
from ml.serving import quality, runtime
from ml.serving.interval import METADATA_KEY, IntervalCalibration
from ml.training import conformal
from tests.utkfolder import make_folder


def test_the_shipped_default_carries_a_calibrated_interval():
    model = runtime.load_age_model(DEFAULT_AGE_WEIGHTS)
    assert model.interval is not None
    cells = (len(model.interval.edges) + 1) * 2
    assert len(model.interval.lower) == len(model.interval.upper) == cells
    assert all(lo < 0 < hi for lo, hi in zip(model.interval.lower, model.interval.upper, strict=True))
    assert "sharp" in model.interval.fitted_on and "px40" in model.interval.fitted_on


def test_a_blurred_face_gets_a_wider_range_than_its_sharp_original(predictor, astronaut_png, blurred_astronaut_png):
    (sharp,) = predictor.predict(astronaut_png).faces
    (soft,) = predictor.predict(blurred_astronaut_png).faces
    chip_sharp = predictor.chips(predictor.decode(astronaut_png), [sharp.face])
    chip_soft = predictor.chips(predictor.decode(blurred_astronaut_png), [soft.face])
    assert quality.sharpness(chip_soft)[0] < quality.sharpness(chip_sharp)[0]
    width = lambda f: f.age_interval[1] - f.age_interval[0]  # noqa: E731
    assert width(soft) > width(sharp)


def test_a_small_face_counts_as_poor_and_a_large_sharp_one_does_not():
    sharp = np.array([quality.SHARP_CHIP * 1.1, quality.SHARP_CHIP * 1.1, quality.SHARP_CHIP / 2])
    short = quality.shortfall(sharp, np.array([200.0, 20.0, np.nan]))
    assert short[0] == 0 and short[1] == pytest.approx(np.log(quality.LARGE_FACE / 20))
    assert short[2] == pytest.approx(np.log(2))  # an unknown size counts nothing; the blur does
    assert quality.FaceQuality(20.0, 1.3).problem == "the face is small"
    assert quality.FaceQuality(200.0, 0.3).problem == "the photo is blurred"
    assert quality.FaceQuality(200.0, 1.3).problem is None


def test_a_range_says_why_it_is_wider_only_where_the_face_s_quality_widened_it():
    """Two predicted-age groups (under 20, 20 and over): the first's poor cell is wider than its good
    cell, the second's no wider, as in some groups of the shipped calibration."""
    cal = IntervalCalibration(coverage=0.8, edges=[20.0], poor_from=0.4, sharp_ref=1.24, face_ref=64.0,
                              lower=[-1.0, -1.5, -1.0, -0.9], upper=[1.0, 1.5, 1.0, 1.0])
    ages = np.array([10.0, 10.0, 10.0, 10.0, 30.0])
    spreads = np.array([4.0, 4.0, 4.0, 0.9, 4.0])
    sharp = np.array([1.3, 0.3, 1.0, 0.3, 0.3])
    face_px = np.array([200.0, 200.0, 20.0, 200.0, 200.0])
    notes = cal.range_notes(ages, spreads, sharp, face_px)
    # sharp and large: none; blurred: 4 years wider; smaller more than blurred; blurred but a spread
    # of 0.9 years, so under a year wider; blurred in the group whose poor cell is no wider
    assert notes == [None, quality.BLURRED, quality.SMALL, None, None]
    low, high = cal.bounds(ages, spreads, sharp, face_px)
    assert (high - low)[1] - (high - low)[0] == pytest.approx(4.0)


def test_a_model_without_the_calibration_loads_and_keeps_its_central_range(predictor, astronaut_png, tmp_path):
    """An .onnx exported before the calibration existed: the same file less its metadata entry."""
    proto = onnx.load(str(DEFAULT_AGE_WEIGHTS))
    kept = [p for p in proto.metadata_props if p.key != METADATA_KEY]
    assert len(kept) == len(proto.metadata_props) - 1
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    old = tmp_path / "old.onnx"
    onnx.save(proto, str(old))
    model = runtime.load_age_model(old)
    assert model.interval is None
    img = predictor.decode(astronaut_png)
    chips = predictor.chips(img, predictor.detector.detect(img.rgb)[:1])
    (plain,) = model.estimate(chips)
    probs = model.probabilities(chips)
    point = model.probabilities(chips, model.point_temperature)
    (expected,) = runtime.summarise(probs, model.ages, 0.8, point)
    assert (plain.low, plain.high) == pytest.approx((expected.low, expected.high))
    (calibrated,) = runtime.load_age_model(DEFAULT_AGE_WEIGHTS).estimate(chips)
    assert calibrated.age == pytest.approx(plain.age) and (calibrated.low, calibrated.high) != (plain.low, plain.high)


def test_coverage_by_age_group_on_a_fixture_set_adds_up(tmp_path):
    from ml.training.chips import extract
    from ml.training.data import scan
    from ml.training.evaluate import evaluate_model

    make_folder(tmp_path / "faces", n=16)
    samples, _ = scan([tmp_path / "faces"])
    chips = extract(samples, workers=1)
    assert len(chips) >= 12 and chips.face_px is not None and (chips.face_px > 50).all()
    m = evaluate_model(runtime.load_age_model(DEFAULT_AGE_WEIGHTS), chips)
    groups = ((m.coverage_by_band, m.coverage_ci_by_band), (m.coverage_by_predicted, m.coverage_ci_by_predicted))
    for shares, cis in groups:
        assert sum(n for n, _ in shares.values()) == m.n
        covered = sum(n * share for n, share in shares.values())
        assert covered == pytest.approx(m.coverage * m.n)
        assert round(covered) == pytest.approx(covered)  # whole faces
        for band, (_, share) in shares.items():
            lo, hi = cis[band]
            assert 0 <= lo <= share <= hi <= 1
    assert m.coverage_ci[0] <= m.coverage <= m.coverage_ci[1]
    assert sum(n * w for n, w in m.width_by_band.values()) == pytest.approx(m.mean_width * m.n)


def test_the_fit_covers_each_true_age_group_of_a_biased_model():
    """A model that reads the old young and teenagers old: plain quantiles by predicted age leave
    those groups short; the balanced fit brings each of them to its band."""
    rng = np.random.default_rng(0)
    y = rng.uniform(1, 90, 6000)
    age = y + np.interp(y, [0, 16, 40, 90], [1, 3, 0, -8]) + rng.normal(0, 3 + 0.05 * y)
    spread = 3 + 0.05 * age
    faces = conformal.Faces(age, spread, np.full(len(y), 1.3), np.full(len(y), 200.0), y,
                            np.full(len(y), conformal.SHARP, dtype=object))
    fitted = conformal.fit(faces)
    low, high = fitted.bounds(age, spread, faces.sharpness, faces.face_px)
    covered = (y >= low) & (y <= high)
    groups = np.searchsorted(conformal.TRUE_EDGES, y, side="right")
    by_group = [covered[groups == g].mean() for g in range(len(conformal.TRUE_EDGES) + 1)]
    assert 0.77 <= covered.mean() <= 0.83
    assert min(by_group) >= 0.75 and max(by_group) <= 0.87, by_group
    again = IntervalCalibration.from_json(fitted.to_json())
    assert again == fitted and json.loads(fitted.to_json())["method"] == "mondrian-conformal-v1"


def test_a_retrained_model_carries_its_own_calibration_into_the_served_file(tmp_path):
    pytest.importorskip("torch")
    from ml.training.agemodel import load_age_model, save_age_model
    from ml.training.chips import extract
    from ml.training.data import scan
    from ml.training.onnx_export import export
    from ml.training.train import calibrate

    make_folder(tmp_path / "faces", n=12)
    samples, _ = scan([tmp_path / "faces"])
    val = extract(samples, size=80, padding=0.375, workers=1)
    blur = extract(samples, size=80, padding=0.375, workers=1, degradation="blur2")
    source = tmp_path / "src.safetensors"
    shutil.copy(WEIGHTS_DIR / "resnet10-utkface-v3.safetensors", source)
    model = load_age_model(source, fold=False)
    shipped = model.interval
    figures = calibrate(model, val, copies={"blur2": blur})
    assert model.interval is not None and model.interval != shipped
    assert model.interval.fitted_on == f"validation faces: sharp {len(val)}, blur2 {len(blur)}"
    assert "interval_coverage_sharp" in figures
    save_age_model(tmp_path / "new.safetensors", model, half=True)
    served = export(tmp_path / "new.safetensors", tmp_path / "new.onnx")
    assert served.interval == model.interval
