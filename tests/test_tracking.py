"""Faces followed across frames: ids that stay while a face stays, an age that does not jitter, the
predictor's interval never narrowed, widened only to hold the age shown."""

from __future__ import annotations

import statistics

import pytest

from ml.serving.boxes import Box, Face
from ml.serving.predictor import FaceAge, Prediction
from ml.serving.tracking import FaceTracker
from tests.video import camera_frames, jpeg

FPS = 15


def frame(*faces: tuple[float, float, float], width: int = 480, height: int = 360, side: float = 100) -> Prediction:
    """A frame holding a face of `side` px at each (x, y) with that age."""
    return Prediction(width, height, [FaceAge(Face(Box(x, y, side, side), 0.9, ()), age, (age - 8, age + 9), 4.0)
                                      for x, y, age in faces], "test")


def test_a_face_that_moves_a_little_keeps_its_id():
    tracker = FaceTracker()
    ids = {tracker.update(frame((100 + 3 * i, 80 + 2 * i, 30)), i / FPS)[0].id for i in range(30)}
    assert ids == {1}


def test_two_faces_get_two_ids_that_follow_them_whatever_the_order():
    tracker = FaceTracker()
    first = tracker.update(frame((20, 50, 30), (300, 60, 60)), 0.0)
    assert [f.id for f in first] == [1, 2]
    # The predictor lists faces largest first: the order may change from one frame to the next.
    second = tracker.update(frame((302, 61, 61), (22, 50, 31)), 1 / FPS)
    assert [(f.id, f.face.face.box.x) for f in second] == [(2, 302), (1, 22)]


@pytest.mark.parametrize(("away", "same"), [(0.2, True), (0.9, True), (1.3, False)])
def test_a_face_that_leaves_keeps_its_id_if_back_within_a_second(away, same):
    tracker = FaceTracker()
    for i in range(10):
        tracker.update(frame((100, 80, 30)), i / FPS)
    last = 9 / FPS
    tracker.update(frame(), last + away / 2)  # nobody in the frame
    back = tracker.update(frame((104, 82, 30)), last + away)
    assert (back[0].id == 1) is same
    assert back[0].id == (1 if same else 2)


def test_a_new_face_elsewhere_gets_a_new_id():
    tracker = FaceTracker()
    tracker.update(frame((10, 10, 30)), 0.0)
    assert tracker.update(frame((300, 200, 30)), 0.1)[0].id == 2


def test_the_frame_size_does_not_matter_to_the_tracking():
    tracker = FaceTracker()
    tracker.update(frame((100, 80, 30)), 0.0)
    # The same place in a frame twice the size.
    assert tracker.update(frame((200, 160, 30), width=960, height=720, side=200), 0.1)[0].id == 1


def test_the_smoothed_age_follows_a_change_and_the_interval_is_the_frames_own():
    tracker = FaceTracker(smoothing_seconds=1.0)
    tracker.update(frame((100, 80, 30)), 0.0)
    faces = [tracker.update(frame((100, 80, 40)), i / FPS)[0] for i in range(1, 4 * FPS)]
    assert 30 < faces[0].age < 32  # one frame moves it a little
    assert faces[-1].age == pytest.approx(40, abs=0.3)  # four time constants later it is there
    assert all(f.face.age_interval == (32, 49) for f in faces)  # the predictor's, as it gave it
    # The range shown is never narrower than the frame's, and holds the age shown beside it: widened
    # down to the smoothed age while that is still below the frame's interval (30-32 here), no more.
    assert all(f.age_interval == (min(32, f.age), 49) for f in faces)
    assert faces[0].age_interval[0] == faces[0].age < 32
    assert faces[-1].age_interval == (32, 49)
    assert not faces[0].steady and faces[-1].steady


def test_on_a_still_face_the_shown_age_moves_less_than_a_year(predictor):
    """Five seconds of a still face at 15 frames a second, with sensor noise and shake, through the
    real predictor: the network's ages jitter, the shown ones stay within a year (standard deviation)."""
    tracker = FaceTracker()
    raw, shown, intervals = [], [], []
    for i, pixels in enumerate(camera_frames(5 * FPS, noise=6, shake=3)):
        prediction = predictor.predict(jpeg(pixels))
        assert len(prediction.faces) == 1
        (face,) = tracker.update(prediction, i / FPS)
        assert face.id == 1
        raw.append(face.face.age)
        shown.append(face.age)
        intervals.append(face.face.age_interval == prediction.faces[0].age_interval)
    settled = shown[FPS:]  # after the first second
    assert statistics.pstdev(settled) <= 1.0
    assert statistics.pstdev(settled) < statistics.pstdev(raw[FPS:])
    assert all(intervals)
