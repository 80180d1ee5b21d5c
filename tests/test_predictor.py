"""The whole pipeline on real photos: detection, alignment, the age network."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from ml.serving.predictor import Predictor, PredictorSettings
from tests import badimages as b
from tests.conftest import FIXTURES


def test_astronaut_has_one_face_aged_25_to_60(predictor, astronaut_png):
    result = predictor.predict(astronaut_png)
    assert (result.width, result.height) == (512, 512)
    assert len(result.faces) == 1
    face = result.faces[0]
    assert 25 <= face.age <= 60
    low, high = face.age_interval
    assert low < face.age < high
    assert face.age_spread > 0
    assert result.model_version == predictor.version
    box = face.face.box
    assert 100 < box.x < 260 and 50 < box.y < 200 and 60 < box.width < 200  # her face, top middle
    assert len(face.face.keypoints) == 6


@pytest.mark.parametrize("name", ["coffee.png", "cat.png", "rocket.jpg", "moon.png", "horse.png"])
def test_photo_without_people_has_no_face(predictor, name):
    result = predictor.predict((FIXTURES / name).read_bytes())
    assert result.faces == []


def test_cameraman_has_one_face(predictor):
    assert len(predictor.detect((FIXTURES / "cameraman.png").read_bytes()).faces) == 1


def test_exif_rotated_copy_gives_the_same_box(predictor, astronaut_png):
    upright = Image.open(io.BytesIO(astronaut_png)).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated 90 degrees counter-clockwise; viewers turn it back
    rotated = b.encode(upright.transpose(Image.Transpose.ROTATE_90), "JPEG", quality=95, exif=exif.tobytes())
    straight = b.encode(upright, "JPEG", quality=95)
    a = predictor.detect(straight).faces[0].box
    r = predictor.detect(rotated).faces[0].box
    assert (a.x, a.y, a.width, a.height) == pytest.approx((r.x, r.y, r.width, r.height), abs=3)


def test_large_jpeg_boxes_are_in_full_image_pixels(predictor, astronaut_png):
    small = predictor.detect(b.astronaut_jpeg(size=(512, 512))).faces[0].box
    big = predictor.detect(b.astronaut_jpeg(size=(4096, 4096))).faces[0].box
    assert (big.x, big.y, big.width, big.height) == pytest.approx(
        (small.x * 8, small.y * 8, small.width * 8, small.height * 8), rel=0.08)


def test_faces_are_capped_largest_first(astronaut_png):
    data = b.three_faces_jpeg(astronaut_png)
    with Predictor.load(settings=PredictorSettings(max_faces=2)) as capped:
        faces = capped.detect(data).faces
    assert len(faces) == 2
    assert faces[0].box.area > faces[1].box.area


def test_all_faces_of_a_photo_in_one_batch_match_one_at_a_time(predictor, astronaut_png):
    img = predictor.decode(b.encode(Image.open(io.BytesIO(astronaut_png)).convert("RGB"), "PNG"))
    faces = predictor.detector.detect(img.rgb)
    chips = predictor.chips(img, faces * 3)
    together = predictor.age_model.estimate(chips)
    alone = [predictor.age_model.estimate(chips[i : i + 1])[0] for i in range(len(chips))]
    assert [e.age for e in together] == pytest.approx([e.age for e in alone], abs=1e-3)


def test_predict_is_safe_from_several_threads(predictor, astronaut_png):
    photos = [astronaut_png, (FIXTURES / "cameraman.png").read_bytes(), (FIXTURES / "coffee.png").read_bytes()]
    expected = [[round(f.age, 3) for f in predictor.predict(p).faces] for p in photos]
    with ThreadPoolExecutor(max_workers=6) as pool:
        got = list(pool.map(lambda i: [round(f.age, 3) for f in predictor.predict(photos[i % 3]).faces], range(24)))
    assert got == [expected[i % 3] for i in range(24)]


def test_chip_is_aligned_64_pixel_rgb(predictor, astronaut_png):
    img = predictor.decode(astronaut_png)
    chips = predictor.chips(img, predictor.detector.detect(img.rgb))
    assert chips.shape == (1, 64, 64, 3) and chips.dtype == np.uint8
    assert chips.std() > 20  # a face, not a flat patch


def test_small_faces_of_a_group_photo_are_found(predictor, astronaut_png):
    """Eight faces of about 75 px on a 1800x1000 canvas: too small for the detectors on the whole
    image, found on the tiles (each tile is seen at 192x192 too, so much smaller faces are not)."""
    small = Image.open(io.BytesIO(astronaut_png)).convert("RGB").resize((400, 400))
    canvas = Image.new("RGB", (1800, 1000), (90, 110, 90))
    spots = [(x, y) for y in (100, 560) for x in (50, 500, 950, 1400)]
    for spot in spots:
        canvas.paste(small, spot)
    faces = predictor.detect(b.encode(canvas, "JPEG", quality=92)).faces
    assert len(faces) == 8
    cells = {(int((f.box.x + f.box.width / 2 - 50) // 450), int((f.box.y + f.box.height / 2 - 100) // 460))
             for f in faces}
    assert cells == {(col, row) for col in range(4) for row in range(2)}  # one face in each pasted photo
