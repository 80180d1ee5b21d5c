"""The face detector's passes on small photos made from the public-domain fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image, ImageOps

from ml.serving.blazeface import turned
from ml.serving.faces import Box, DetectorSettings, FaceDetector
from ml.serving.yunet import YUNET_MEMORY, YuNet
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


def _in_cells(boxes: list[Box], side: int, spots: list[tuple[int, int]] = SPOTS) -> set[int]:
    """Which pasted head each box sits on."""
    return {i for b in boxes for i, (x, y) in enumerate(spots)
            if x <= b.x + b.width / 2 <= x + side and y <= b.y + b.height / 2 <= y + side}


# Twelve heads of 80 px (faces about 40 px wide) in a 4 x 3 grid, slightly out of line, on a 960x640 photo.
CROWD_SIDE = 80
CROWD_SPOTS = [(c * 240 + 80 + (r * 17 % 23) - 11, r * 213 + 66 + (c * 13 % 19) - 9)
               for r in range(3) for c in range(4)]


def crowd_photo() -> Image.Image:
    canvas = Image.new("RGB", (960, 640), (96, 120, 140))
    heads = _heads()
    for i, spot in enumerate(CROWD_SPOTS):
        canvas.paste(heads[i % len(heads)].resize((CROWD_SIDE, CROWD_SIDE), Image.Resampling.LANCZOS), spot)
    return canvas


@pytest.fixture(scope="module")
def blazeface_alone() -> Iterator[FaceDetector]:
    det = FaceDetector(DetectorSettings.v2(), size=1)
    yield det
    det.close()


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
        found = turned(full, stored, 0.5)
    assert len(found) == 1
    cx, cy, w, h = u.x + u.width / 2, u.y + u.height / 2, rgb.shape[1], rgb.shape[0]
    for _ in range(k):  # the upright face's centre, turned clockwise with the photo
        cx, cy, w, h = h - cy, cx, h, w
    b = found[0].box
    assert abs(b.x + b.width / 2 - cx) < 0.15 * u.width
    assert abs(b.y + b.height / 2 - cy) < 0.15 * u.height
    assert abs(b.width - u.width) < 0.2 * u.width


@pytest.mark.parametrize("gray", [False, True], ids=["colour", "gray"])
def test_crowd_of_small_faces_gives_every_face_once(detector, blazeface_alone, gray):
    photo = crowd_photo()
    if gray:
        photo = ImageOps.grayscale(photo).convert("RGB")
    rgb = np.asarray(photo)
    faces = detector.detect(rgb)
    assert len(faces) == 12
    assert _in_cells([f.box for f in faces], CROWD_SIDE, CROWD_SPOTS) == set(range(12))
    assert len(blazeface_alone.detect(rgb)) <= 6  # what YuNet adds: BlazeFace alone misses half or more


def test_portrait_costs_one_small_yunet_pass_and_a_crowd_looks_closer(detector):
    """YuNet runs at 320 px first; only faces too small there to rule out smaller ones send it on to 640
    and 1280 px. The 640x480 portrait stops at 320 px, settled (the short-range pass is skipped); the crowd
    (faces of about 13 px at 320 px, 27 at 640) goes on to the photo itself."""
    canvas = Image.new("RGB", (683, 512), (128, 128, 128))
    canvas.paste(Image.open(FIXTURES / "astronaut.png").convert("RGB"), (85, 0))
    portrait = np.asarray(canvas.resize((640, 480), Image.Resampling.LANCZOS))
    passes, settled = detector._yunet_passes(detector._yunet, portrait)
    assert [len(found) for found in passes] == [1] and settled
    assert len(detector.detect(portrait)) == 1
    crowd, settled = detector._yunet_passes(detector._yunet, np.asarray(crowd_photo()))
    assert len(crowd) == 3 and len(crowd[-1]) == 12 and not settled  # 320 px, 640 px, then the photo (960 px)


def test_photos_under_320_px_get_the_faces_blazeface_alone_gives(detector, blazeface_alone):
    """YuNet never runs below 320 px: UTKFace's 200x200 crops keep their boxes, so the chips the age model
    was trained on stay the same."""
    for crop_box in [(130, 30, 330, 230), (170, 70, 290, 190), (190, 95, 260, 170)]:
        crop = np.asarray(Image.open(FIXTURES / "astronaut.png").convert("RGB").crop(crop_box).resize((200, 200)))
        assert detector.detect(crop) == blazeface_alone.detect(crop)


def test_yunet_faces_come_in_blazefaces_box_and_keypoints(blazeface_alone):
    """The same face through YuNet and BlazeFace: nearly the same box, and six keypoints in the same order
    (the person's right eye on the image's left, the ears outside the eyes)."""
    rgb = np.asarray(Image.open(FIXTURES / "astronaut.png").convert("RGB"))
    (b,) = blazeface_alone.detect(rgb)
    (y,) = YuNet().detect(rgb)
    ix = max(0.0, min(b.box.x + b.box.width, y.box.x + y.box.width) - max(b.box.x, y.box.x))
    iy = max(0.0, min(b.box.y + b.box.height, y.box.y + y.box.height) - max(b.box.y, y.box.y))
    assert ix * iy / (b.box.area + y.box.area - ix * iy) > 0.7
    assert len(y.keypoints) == 6
    for p, q in zip(y.keypoints, b.keypoints, strict=True):
        assert abs(p.x - q.x) < 0.2 * b.box.width and abs(p.y - q.y) < 0.2 * b.box.height
    right_ear, right_eye, left_eye, left_ear = y.keypoints[4], y.keypoints[0], y.keypoints[1], y.keypoints[5]
    assert right_ear.x < right_eye.x < left_eye.x < left_ear.x


def test_yunet_finds_the_same_faces_whatever_its_arena_does():
    """The memory modes (bench/yunet_memory.py) change where ONNX Runtime keeps its buffers, not the result;
    a large input (1280 px) first, so that the shrinking modes have an arena to shrink before the next."""
    rgb = np.asarray(Image.open(FIXTURES / "astronaut.png").convert("RGB").resize((1280, 1280)))
    results = set()
    for memory in YUNET_MEMORY:
        yunet = YuNet(memory=memory)
        results.add(tuple(yunet.detect(rgb) + yunet.detect(rgb, 320)))
    assert len(results) == 1 and len(next(iter(results))) == 2
    with pytest.raises(ValueError, match="memory"):
        YuNet(memory="none")


def test_a_video_frame_of_a_portrait_gets_yunets_face_alone_and_the_same_box(detector):
    """A live frame whose portrait YuNet settled at 320 px skips the full-range pass; the face is the one
    a photo gets (YuNet's box outranks the full-range model's in the merge), so the two modes agree."""
    frame = np.asarray(Image.open(FIXTURES / "astronaut.png").convert("RGB").crop((0, 0, 512, 384)).resize((480, 360)))
    assert detector.detect(frame, video=True) == detector.detect(frame)
    assert len(detector.detect(frame, video=True)) == 1


def test_a_video_frame_that_is_no_portrait_gets_the_whole_search(detector):
    group = np.asarray(small_group_photo())
    assert detector.detect(group, video=True) == detector.detect(group)
    assert len(detector.detect(group, video=True)) == len(SPOTS)
