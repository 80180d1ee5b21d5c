"""The face-quality gate (ml/serving/gate.py) on real chips: its measures, its verdicts, the predictor's use of them."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageFilter

from ml.serving import gate, quality
from tests.conftest import FIXTURES


def _chip(predictor, data: bytes) -> np.ndarray:
    image = predictor.decode(data)
    [face] = predictor.detector.detect(image.rgb)
    return predictor.chips(image, [face])[0]


def test_sharpness_falls_with_blur_and_the_verdict_follows(predictor, astronaut_png):
    sharp = _chip(predictor, astronaut_png)
    blurred = np.asarray(Image.fromarray(sharp).filter(ImageFilter.GaussianBlur(3)))
    sharp_score, blurred_score = quality.sharpness(np.stack([sharp, blurred]))
    assert sharp_score > 2 * gate.MIN_SHARPNESS > blurred_score * 2
    assert gate.judge(100, sharp_score, 1.0, 0.9) == gate.Verdict(1.0, None)
    assert gate.judge(100, blurred_score, 1.0, 0.9).reason == "too_blurred"
    assert gate.judge(gate.MIN_FACE_PX - 1, sharp_score, 1.0, 0.9).reason == "too_small"
    # The gate's own verdict on the chips is the same: one measure of blur, the interval's.
    assert [v.reason for v in gate.FaceGate().judge([100, 100], [0.9, 0.9], np.stack([sharp, blurred]))] == \
        [None, "too_blurred"]


def test_the_classifier_tells_a_face_from_a_dog_and_vetoes_only_unsure_boxes(predictor, astronaut_png):
    classifier = gate.FaceClassifier()
    image = predictor.decode((FIXTURES / "dog.jpg").read_bytes())
    dogs = predictor.detector.detect(image.rgb)
    assert dogs, "the detector takes the dog's face for a face: that is what the gate is for"
    face, dog = classifier.prob(np.stack([_chip(predictor, astronaut_png), predictor.chips(image, dogs[:1])[0]]))
    assert face > gate.MIN_FACE_PROB > dog
    assert gate.judge(100, 0.5, float(dog), score=0.6).reason == "not_a_face"
    assert gate.judge(100, 0.5, float(dog), score=gate.SURE_SCORE).reason is None  # a sure detection stays


def test_the_predictor_ages_only_faces_worth_it(predictor):
    data = (FIXTURES / "blurred_background.jpg").read_bytes()
    result = predictor.predict(data)
    [aged] = result.faces
    [aside] = result.set_aside
    assert aside.reason == "too_blurred" and aside.quality < aged.quality
    detection = predictor.detect(data)
    assert [f.box for f in detection.faces] == [aged.face.box]
    assert [s.face.box for s in detection.set_aside] == [aside.face.box]
    buf = io.BytesIO()
    Image.open(io.BytesIO(data)).save(buf, "PNG")  # the same photo, lossless: the same verdicts
    assert [s.reason for s in predictor.detect(buf.getvalue()).set_aside] == ["too_blurred"]
