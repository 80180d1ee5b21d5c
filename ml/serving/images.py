"""Untrusted image bytes in, an upright RGB uint8 array out.

Only JPEG, PNG (APNG included) and WebP are decoded: most Pillow advisories are in the other
decoders, so they are never reached. Every way the bytes can be wrong ends in one of the typed
errors below, which the API maps to a 4xx answer by their `code`.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP")
DEFAULT_MAX_PIXELS = 40_000_000
# Large images are reduced as long as the long side stays at least this big (JPEGs while decoding, by
# libjpeg's DCT scaling, nearly free): the detector sees 192x192 crops and a 64 px chip needs no more.
DEFAULT_WORK_SIDE = 1000
# Transparent pixels become this grey: neutral for the detector and for the age network.
BACKGROUND = (128, 128, 128)

# Pillow only warns about decompression bombs below twice its own limit; here a bomb is an error.
warnings.simplefilter("error", Image.DecompressionBombWarning)


class ImageError(ValueError):
    """Base of the image errors; `code` is stable and is what clients see."""

    code = "invalid_image"


class EmptyImage(ImageError):
    code = "empty_file"


class UnsupportedImage(ImageError):
    code = "unsupported_image"


class CorruptImage(ImageError):
    code = "corrupt_image"


class ImageTooLarge(ImageError):
    code = "image_too_many_pixels"


@dataclass(frozen=True, slots=True)
class LoadedImage:
    """An upright RGB image, possibly decoded at reduced scale.

    `width` and `height` are those of the full upright image; `rgb` may be smaller by `scale`
    (rgb pixels per full-image pixel), so coordinates found on `rgb` are divided by `scale`.
    """

    rgb: np.ndarray
    width: int
    height: int
    scale: float
    format: str


def load_image(
    data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, work_side: int | None = DEFAULT_WORK_SIDE
) -> LoadedImage:
    """Decode `data`; raise an `ImageError` subclass for anything that is not a usable photo."""
    if not data:
        raise EmptyImage("The file is empty.")
    try:
        img = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageTooLarge(f"The image has more than {max_pixels} pixels.") from e
    except UnidentifiedImageError as e:
        raise UnsupportedImage("Not a JPEG, PNG or WebP image.") from e
    except (OSError, ValueError, SyntaxError) as e:  # malformed headers and text-chunk bombs
        raise CorruptImage("The image data is damaged.") from e
    with img:
        width, height = img.size
        if width < 1 or height < 1:
            raise UnsupportedImage("The image has no pixels.")
        if width * height > max_pixels:
            raise ImageTooLarge(f"The image has more than {max_pixels} pixels.")
        fmt = img.format or "unknown"
        try:
            orientation = img.getexif().get(0x0112, 1)
        except Exception:  # a damaged EXIF block must not sink an otherwise good photo
            orientation = 1
        if fmt == "JPEG" and work_side and max(width, height) >= 2 * work_side:
            factor = max(width, height) / work_side
            img.draft("RGB", (int(width / factor), int(height / factor)))
        try:
            img.load()
            rgb = _to_rgb(img)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise ImageTooLarge(f"The image has more than {max_pixels} pixels.") from e
        except (OSError, ValueError, SyntaxError, EOFError) as e:
            raise CorruptImage("The image data is damaged or truncated.") from e
    if work_side and max(rgb.shape[:2]) >= 2 * work_side:  # what draft could not reduce (PNG, WebP)
        rgb = np.asarray(Image.fromarray(rgb).reduce(max(rgb.shape[:2]) // work_side))
    rgb = _upright(rgb, orientation)
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    scale = rgb.shape[1] / width
    return LoadedImage(rgb=np.ascontiguousarray(rgb), width=width, height=height, scale=scale, format=fmt)


def _to_rgb(img: Image.Image) -> np.ndarray:
    """Any decoded mode to RGB uint8, with 16-bit values scaled rather than clipped."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return _gray16_to_rgb(np.asarray(img, dtype=np.uint16))
    if mode == "I":  # 16-bit grayscale PNG decoded as 32-bit integers
        return _gray16_to_rgb(np.clip(np.asarray(img), 0, 65535).astype(np.uint16))
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
    if mode != "RGB":  # L, 1, CMYK, YCbCr, F
        img = img.convert("RGB")
    return np.asarray(img)


def _gray16_to_rgb(values: np.ndarray) -> np.ndarray:
    gray = (values >> 8).astype(np.uint8)
    return np.repeat(gray[:, :, None], 3, axis=2)


def _upright(rgb: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1-8) to an array, as `ImageOps.exif_transpose` would."""
    ops = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.transpose(1, 0, 2),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: a.transpose(1, 0, 2)[::-1, ::-1],
        8: lambda a: np.rot90(a, 1),
    }
    op = ops.get(orientation)
    return op(rgb) if op else rgb


def reencode_jpeg(image: LoadedImage, quality: int = 90) -> bytes:
    """The photo as a fresh JPEG: no EXIF, no GPS, nothing appended. What the service stores."""
    buf = io.BytesIO()
    Image.fromarray(image.rgb).save(buf, "JPEG", quality=quality, optimize=True)
    return buf.getvalue()


__all__ = [
    "ALLOWED_FORMATS",
    "CorruptImage",
    "EmptyImage",
    "ImageError",
    "ImageTooLarge",
    "LoadedImage",
    "UnsupportedImage",
    "load_image",
    "reencode_jpeg",
]
