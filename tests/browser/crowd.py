"""Crowded photos for the browser tests, made from the public-domain and CC0 fixture faces.

No group photo with a licence that lets it into the repository was at hand, so the tests tile the
two fixture portraits (astronaut, cameraman) into one picture: faces side by side, of several
sizes, some close enough that their labels would collide if placed naively.
"""

from __future__ import annotations

import io

from PIL import Image, ImageOps

from tests.browser.server import FIXTURES

# Square crops around each fixture face, in the fixture's own pixels (left, top, right, bottom).
FACES = {
    "astronaut.png": (120, 10, 320, 210),
    "cameraman.png": (150, 20, 370, 240),
}


def _faces() -> list[Image.Image]:
    crops = []
    for name, box in FACES.items():
        photo = Image.open(FIXTURES / name).convert("RGB")
        crops.append(photo.crop(box))
    # Mirrored copies look like other people to the detector's eye and keep the crowd varied.
    return crops + [ImageOps.mirror(crop) for crop in crops]


def crowd(columns: int = 4, rows: int = 2, tile: int = 150, gap: int = 4) -> bytes:
    """A JPEG of `columns` x `rows` faces, tiles of slightly varied sizes, `gap` pixels apart."""
    faces = _faces()
    width = columns * (tile + gap) + gap
    height = rows * (tile + gap) + gap
    canvas = Image.new("RGB", (width, height), (235, 232, 226))
    for index in range(columns * rows):
        row, column = divmod(index, columns)
        # Every third tile a little smaller, so the faces are not all the same size.
        size = tile if index % 3 else int(tile * 0.8)
        face = faces[index % len(faces)].resize((size, size), Image.Resampling.LANCZOS)
        x = gap + column * (tile + gap) + (tile - size) // 2
        y = gap + row * (tile + gap) + (tile - size)
        canvas.paste(face, (x, y))
    out = io.BytesIO()
    canvas.save(out, "JPEG", quality=90)
    return out.getvalue()
