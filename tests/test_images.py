"""Image loading: every bad file gets its typed error, every good one an upright RGB array."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image, ImageOps

from ml.serving import images as ml_images
from ml.serving.images import CorruptImage, EmptyImage, ImageTooLarge, UnsupportedImage, load_image
from tests import badimages as b

REFUSED = [
    ("zero_bytes", lambda: b"", EmptyImage),
    ("truncated_jpeg", b.truncated_jpeg, CorruptImage),
    ("jpeg_header_only", lambda: b.JPEG_HEADER_ONLY, UnsupportedImage),
    ("random_bytes", lambda: os.urandom(4096), UnsupportedImage),
    ("png_bomb_20000", lambda: b.png_header_only(20000, 20000), ImageTooLarge),
    ("png_header_8000", lambda: b.png_header_only(8000, 8000), ImageTooLarge),
    ("png_header_10000", lambda: b.png_header_only(10000, 10000), ImageTooLarge),
    ("png_zero_width", b.zero_width_png, UnsupportedImage),
    ("gif", b.gif_animated, UnsupportedImage),
    ("heic", lambda: b.HEIC, UnsupportedImage),
    ("svg_with_script", lambda: b.SVG, UnsupportedImage),
    ("bmp", b.bmp, UnsupportedImage),
    ("tiff", b.tiff, UnsupportedImage),
    ("psd", lambda: b.PSD, UnsupportedImage),
    ("fits", lambda: b.FITS, UnsupportedImage),
    ("pdf", lambda: b.PDF, UnsupportedImage),
    ("eps", lambda: b.EPS, UnsupportedImage),
    ("png_ztxt_bomb", b.png_with_text_bomb, CorruptImage),
]


@pytest.mark.parametrize(("name", "make", "error"), REFUSED, ids=[r[0] for r in REFUSED])
def test_bad_image_gets_its_typed_error(name, make, error):
    with pytest.raises(error) as info:
        load_image(make())
    assert info.value.code == error.code


def test_pixel_limit_is_a_setting():
    data = b.encode(b.photo((300, 200)), "PNG")
    assert load_image(data, max_pixels=60_000).width == 300
    with pytest.raises(ImageTooLarge):
        load_image(data, max_pixels=59_999)


def test_tiny_file_with_large_area_decodes_reduced():
    img = load_image(b.png_tiny_file_large_area(6000))
    assert (img.width, img.height) == (6000, 6000)
    assert max(img.rgb.shape) <= 2 * ml_images.DEFAULT_WORK_SIDE
    assert img.rgb.mean() == pytest.approx(128, abs=1)


ACCEPTED = [
    ("cmyk_jpeg", b.cmyk_jpeg),
    ("palette_png_transparency", b.palette_png_with_transparency),
    ("la_png", b.la_png),
    ("gray_jpeg", b.gray_jpeg),
    ("polyglot_jpeg", b.polyglot_jpeg),
    ("webp", b.webp),
]


@pytest.mark.parametrize(("name", "make"), ACCEPTED, ids=[a[0] for a in ACCEPTED])
def test_accepted_image_becomes_rgb_with_its_brightness(name, make):
    img = load_image(make())
    assert img.rgb.dtype == np.uint8 and img.rgb.shape == (48, 64, 3)
    reference = np.asarray(b.photo().convert("L"), dtype=np.float32).mean()
    assert img.rgb.mean() == pytest.approx(reference, abs=8)  # palette quantisation moves it a little


def test_16_bit_grayscale_keeps_its_brightness():
    img = load_image(b.gray16_png(40000))
    assert img.rgb.mean() == pytest.approx(40000 / 65535 * 255, abs=1)


def test_transparent_pixels_become_neutral_grey():
    img = load_image(b.rgba_png(alpha=0))
    assert np.all(img.rgb == ml_images.BACKGROUND)


def test_animated_png_gives_its_first_frame():
    img = load_image(b.apng(frames=5))
    assert img.rgb.max() == 0  # frame 0 is black, the others red


def test_exif_orientation_is_applied_and_large_exif_is_fine():
    img = load_image(b.jpeg_with_exif_orientation(6))
    assert (img.width, img.height) == (32, 64)
    assert img.rgb.shape == (64, 32, 3)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_matches_pillow(orientation):
    base = np.random.default_rng(orientation).integers(0, 255, (30, 50, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = b.encode(Image.fromarray(base), "PNG", exif=exif.tobytes())
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    assert np.array_equal(load_image(data).rgb, expected)


def test_large_jpeg_is_decoded_reduced_but_reports_full_size():
    data = b.astronaut_jpeg(size=(4000, 3000))
    img = load_image(data)
    assert (img.width, img.height) == (4000, 3000)
    assert img.rgb.shape[1] < 4000 and img.rgb.shape[1] >= ml_images.DEFAULT_WORK_SIDE
    assert img.scale == pytest.approx(img.rgb.shape[1] / 4000)


def test_reencoded_jpeg_has_no_exif_and_no_trailer():
    img = load_image(b.polyglot_jpeg())
    out = ml_images.reencode_jpeg(img)
    assert b"<html>" not in out and out.endswith(b"\xff\xd9")
    assert not Image.open(io.BytesIO(out)).getexif()
