"""A tiny UTKFace-style folder made from the public-domain fixtures, for training tests."""

from __future__ import annotations

import csv
from pathlib import Path

from PIL import Image, ImageEnhance, ImageOps

FIXTURES = Path(__file__).parent / "fixtures"
# (fixture, face centre x, y, face size) in the fixture's pixels
FACES = [("astronaut.png", 225, 125, 110), ("cameraman.png", 240, 120, 90)]


def make_folder(folder: Path, n: int = 16) -> list[Path]:
    """`n` crops of the two fixture faces (zoomed, mirrored, lighter or darker), 200x200 like
    UTKFace's, named AGE_GENDER_RACE_DATE.jpg.chip.jpg with ages spread over 5-85."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        name, cx, cy, size = FACES[i % len(FACES)]
        img = Image.open(FIXTURES / name).convert("RGB")
        half = size * (0.9 + 0.1 * (i % 4))
        crop = img.crop((int(cx - half), int(cy - half), int(cx + half), int(cy + half))).resize((200, 200))
        if i % 3 == 1:
            crop = ImageOps.mirror(crop)
        crop = ImageEnhance.Brightness(crop).enhance(0.8 + 0.1 * (i % 5))
        age = 5 + (i * 37) % 81
        path = folder / f"{age}_{i % 2}_{i % 5}_2017011{i % 10}12345{i:05d}.jpg.chip.jpg"
        crop.save(path, "JPEG", quality=92)
        paths.append(path)
    return paths


def write_split(path: Path, files: list[Path], val_every: int = 4) -> None:
    """A split file putting every `val_every`-th file in validation, the rest in training."""
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "split"])
        for i, p in enumerate(sorted(files)):
            w.writerow([p.name, "val" if i % val_every == 0 else "train"])
