"""The age step of a photo: all its faces in one run of the age network."""

from __future__ import annotations

import pytest

from ml import Predictor
from ml.paths import DEFAULT_AGE_WEIGHTS
from ml.serving import runtime
from tests import badimages as b


class CountingSession:
    """ONNX Runtime's session, with the batch size of every run written down."""

    def __init__(self, session: object) -> None:
        self.session = session
        self.batches: list[int] = []

    def run(self, names, feeds, *args):  # noqa: ANN001, ANN202
        self.batches.append(len(feeds[runtime.INPUT]))
        return self.session.run(names, feeds, *args)

    def __getattr__(self, name: str) -> object:
        return getattr(self.session, name)


def test_the_faces_of_a_photo_are_aged_in_one_run(predictor, astronaut_png):
    cpus = runtime.CpuShare(1)  # one thread: a photo under load, its age step not spread over CPUs
    model = runtime.load_age_model(DEFAULT_AGE_WEIGHTS, cpus)
    counting = model.session = CountingSession(model.session)
    one_thread = Predictor(predictor.detector, predictor.aligner, model, predictor.settings, cpus)
    photo = b.three_faces_jpeg(astronaut_png)
    result = one_thread.predict(photo)
    assert len(result.faces) == 3
    assert counting.batches == [3 * (2 if model.mirror else 1)]  # with the mirrored chips, when the model has them
    img = one_thread.decode(photo)
    alone = [model.estimate(one_thread.chips(img, [f.face.scaled(img.scale)]))[0].age for f in result.faces]
    assert [f.age for f in result.faces] == pytest.approx(alone, abs=1e-3)
