"""Image files for the hardening cases (rows of ../shared/docs/hardening.md), built in memory."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

FIXTURES = Path(__file__).parent / "fixtures"


def encode(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def photo(size: tuple[int, int] = (64, 48)) -> Image.Image:
    """A small RGB picture with some structure (a gradient)."""
    w, h = size
    x = np.linspace(0, 255, w, dtype=np.float32)[None, :]
    y = np.linspace(0, 255, h, dtype=np.float32)[:, None]
    rgb = np.stack([x + 0 * y, y + 0 * x, (x + y) / 2], axis=2).astype(np.uint8)
    return Image.fromarray(rgb)


def astronaut_jpeg(size: tuple[int, int] | None = None, quality: int = 90) -> bytes:
    img = Image.open(FIXTURES / "astronaut.png").convert("RGB")
    if size:
        img = img.resize(size)
    return encode(img, "JPEG", quality=quality)


def three_faces_jpeg(astronaut_png: bytes) -> bytes:
    """The astronaut three times side by side (400, 300 and 240 px): a photo of three faces, largest first."""
    tiles = [Image.open(io.BytesIO(astronaut_png)).convert("RGB").resize((s, s)) for s in (400, 300, 240)]
    canvas = Image.new("RGB", (1000, 420), (200, 200, 200))
    x = 0
    for t in tiles:
        canvas.paste(t, (x, 0))
        x += t.width + 10
    return encode(canvas, "JPEG", quality=95)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG signature and IHDR claiming width x height, with no pixel data (a decompression bomb)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IEND", b"")


def png_tiny_file_large_area(side: int = 6000) -> bytes:
    """A real side x side grey PNG that compresses to a few tens of KB."""
    raw = (b"\x00" + b"\x80" * side) * side  # filter byte + one grey row, repeated
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    idat = zlib.compress(raw, 9)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def png_with_text_bomb(megabytes: int = 20) -> bytes:
    """A valid small PNG with a zTXt chunk that inflates to `megabytes` of text."""
    good = encode(photo(), "PNG")
    text = b"Comment\x00\x00" + zlib.compress(b"A" * (megabytes << 20), 9)
    idat = good.index(b"IDAT") - 4  # before the pixels, where the header is read
    return good[:idat] + _chunk(b"zTXt", text) + good[idat:]


def cmyk_jpeg() -> bytes:
    return encode(photo().convert("CMYK"), "JPEG", quality=95)


def gray16_png(value: int = 40000) -> bytes:
    img = Image.new("I;16", (64, 48))
    img.frombytes(np.full((48, 64), value, dtype="<u2").tobytes())
    return encode(img, "PNG")


def palette_png_with_transparency() -> bytes:
    img = photo().convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    return encode(img, "PNG", transparency=0)


def rgba_png(alpha: int = 0) -> bytes:
    img = photo().convert("RGBA")
    img.putalpha(alpha)
    return encode(img, "PNG")


def la_png() -> bytes:
    return encode(photo().convert("LA"), "PNG")


def gray_jpeg() -> bytes:
    return encode(photo().convert("L"), "JPEG")


def apng(frames: int = 5) -> bytes:
    imgs = [Image.new("RGB", (64, 48), (40 * i, 0, 0)) for i in range(frames)]
    return encode(imgs[0], "PNG", save_all=True, append_images=imgs[1:], duration=100)


def gif_animated() -> bytes:
    imgs = [Image.new("RGB", (64, 48), (0, 40 * i, 0)) for i in range(3)]
    return encode(imgs[0], "GIF", save_all=True, append_images=imgs[1:])


def webp() -> bytes:
    return encode(photo(), "WEBP", quality=90)


def jpeg_with_exif_orientation(orientation: int = 6, exif_padding: int = 60_000) -> bytes:
    """A 64x32 JPEG stored sideways, with a large EXIF block (orientation + a long comment)."""
    img = photo((64, 32))
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010E] = "x" * exif_padding  # ImageDescription
    return encode(img, "JPEG", exif=exif.tobytes())


def polyglot_jpeg() -> bytes:
    return encode(photo(), "JPEG") + b"<html><script>alert(1)</script></html>PK\x03\x04zipzipzip"


HEIC = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64
SVG = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n"
PSD = b"8BPS\x00\x01" + b"\x00" * 20
FITS = b"SIMPLE  =                    T" + b" " * 50
JPEG_HEADER_ONLY = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"


def bmp() -> bytes:
    return encode(photo(), "BMP")


def tiff() -> bytes:
    return encode(photo(), "TIFF")


def truncated_jpeg() -> bytes:
    data = astronaut_jpeg()
    return data[: int(len(data) * 0.6)]


def zero_width_png() -> bytes:
    return png_header_only(0, 48)
