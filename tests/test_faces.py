"""The face detector's passes on small photos made from the public-domain fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image, ImageOps

from ml.faces import Box, FaceDetector, _turned
from tests.conftest import FIXTURES

# Six heads on a 640x400 photo: under 800 px, where the old detector never looked at tiles.
SPOTS = [(40, 60), (240, 40), (440, 70), (60, 230), (260, 240), (460, 220)]


@pytest.fixture(scope="module")
def detector() -> Iterator[FaceDetector]:
    det = FaceDetector(size=1)
    yield det
    det.close()


def _heads() -> list[Image.Image]:
    astronaut = Image.open(FIXTURES / "astronaut.png").convert("RGB").crop((130, 30, 330, 230))
    cameraman = Image.open(FIXTURES / "cameraman.png").convert("RGB").crop((150, 80, 300, 230))
    return [astronaut, ImageOps.mirror(astronaut), cameraman]


def small_group_photo(side: int = 110) -> Image.Image:
    canvas = Image.new("RGB", (640, 400), (96, 120, 140))
    heads = _heads()
    for i, spot in enumerate(SPOTS):
        canvas.paste(heads[i % len(heads)].resize((side, side)), spot)
    return canvas


def _in_cells(boxes: list[Box], side: int) -> set[int]:
    """Which pasted head each box sits on."""
    return {i for b in boxes for i, (x, y) in enumerate(SPOTS)
            if x <= b.x + b.width / 2 <= x + side and y <= b.y + b.height / 2 <= y + side}


def test_small_group_photo_gives_every_face(detector):
    faces = detector.detect(np.asarray(small_group_photo()))
    assert len(faces) == 6
    assert _in_cells([f.box for f in faces], 110) == set(range(6))


def test_gray_copy_of_the_small_group_photo_gives_every_face(detector):
    gray = ImageOps.grayscale(small_group_photo()).convert("RGB")
    faces = detector.detect(np.asarray(gray))
    assert len(faces) == 6
    assert _in_cells([f.box for f in faces], 110) == set(range(6))


def test_gray_photo_has_one_face(detector):
    gray = ImageOps.grayscale(Image.open(FIXTURES / "astronaut.png").convert("RGB")).convert("RGB")
    assert len(detector.detect(np.asarray(gray))) == 1


def test_face_that_fills_the_whole_frame_is_found(detector):
    """A crop cut inside the face, as tight as a UTKFace crop: found only on the padded pass."""
    crop = Image.open(FIXTURES / "astronaut.png").convert("RGB").crop((190, 95, 260, 170)).resize((200, 200))
    faces = detector.detect(np.asarray(crop))
    assert len(faces) == 1
    b = faces[0].box
    assert b.x >= 0 and b.y >= 0 and b.x + b.width <= 200 and b.y + b.height <= 200


@pytest.mark.parametrize("k", [1, 2, 3])
def test_faces_found_on_a_turned_copy_map_back_onto_the_photo(detector, k):
    """A photo stored turned k times clockwise (its EXIF orientation lost): the turned pass finds the
    face on the copy turned back, and reports it where it is in the stored photo."""
    rgb = np.asarray(Image.open(FIXTURES / "astronaut.png").convert("RGB"))
    u = detector.detect(rgb)[0].box
    stored = np.ascontiguousarray(np.rot90(rgb, -k))
    with detector._borrow() as (_, full):
        found = _turned(full, stored, 0.5)
    assert len(found) == 1
    cx, cy, w, h = u.x + u.width / 2, u.y + u.height / 2, rgb.shape[1], rgb.shape[0]
    for _ in range(k):  # the upright face's centre, turned clockwise with the photo
        cx, cy, w, h = h - cy, cx, h, w
    b = found[0].box
    assert abs(b.x + b.width / 2 - cx) < 0.15 * u.width
    assert abs(b.y + b.height / 2 - cy) < 0.15 * u.height
    assert abs(b.width - u.width) < 0.2 * u.width
