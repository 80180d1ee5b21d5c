"""Photos of the two faces in the public-domain fixtures, varied, for tests that train on them."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, ImageEnhance, ImageOps

from tests.utkfolder import FACES, FIXTURES

ASTRONAUT, CAMERAMAN = 0, 1


def face_photo(face: int, i: int) -> bytes:
    """A 200x200 JPEG of fixture face `face` (ASTRONAUT or CAMERAMAN), variant `i`: zoomed, mirrored,
    lighter or darker, so that no two variants are the same image."""
    name, cx, cy, size = FACES[face]
    img = Image.open(FIXTURES / name).convert("RGB")
    half = size * (0.85 + 0.05 * (i % 5))
    crop = img.crop((int(cx - half), int(cy - half), int(cx + half), int(cy + half))).resize((200, 200))
    if i % 2:
        crop = ImageOps.mirror(crop)
    crop = ImageEnhance.Brightness(crop).enhance(0.8 + 0.07 * (i % 7))
    out = io.BytesIO()
    crop.save(out, "JPEG", quality=90)
    return out.getvalue()


def face_folder(folder: Path, face: int, age: int, n: int, start: int = 0) -> list[Path]:
    """`n` variants of one face, all labelled `age`, as a UTKFace-style folder."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(start, start + n):
        path = folder / f"{age}_{face}_0_2017011{i % 10}12345{i:05d}.jpg.chip.jpg"
        path.write_bytes(face_photo(face, i))
        paths.append(path)
    return paths
