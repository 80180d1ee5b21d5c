"""Generate the face-detection evaluation set under data/detection-set/ (git-ignored), deterministically.

    .venv/bin/python -m bench.detection_set [--faces ../shared/data/faces] [--utkface ../shared/data/utkface]
                                            [--out data/detection-set] [--scenes 300] [--held-out 100]

`manifest.tsv` lists every image with its kind, its variant, its part, the exact number of faces and,
where known, their boxes (x,y,w,h in the stored image's pixels, `;`-separated):
- kind `photo`: every colour photo with people in `--faces` (its `manifest.tsv` has the counts), stored
  upright as the service decodes it. Their boxes are the current detector's on the original where it
  finds exactly the counted faces (looked at by eye once: they are the faces), else only the count.
- kind `scene`: group scenes of UTKFace faces from the validation split only (ml/splits/utkface.csv),
  1-12 faces pasted at 20-160 px onto the no-people photos and procedural backgrounds; some overlap
  (a later face may cover up to a quarter of an earlier one's box), some faces or whole scenes gray.
  A pasted face's box is the one the detector gives on its own 200x200 crop set in the middle of a
  400x400 gray canvas: a UTKFace crop is so tight that the detector's box on the bare crop is cut
  by the frame, while the padded crop gives the detector's usual box of that face (found for 99.8%
  of the crops; the few it misses are not used). Boxes in the detector's own convention are what
  an IoU can be judged against; a template box from landmarks would differ for turned faces.
- kind `no-people`: the photos without people in `--faces` and procedural textures (star fields,
  foliage, clouds, stone, fur, stripes and checks, text-like marks), for false faces.
Each of them comes as `original` and in the variants `gray`, `sepia`, `low-contrast`, `rotated 15`,
`rotated 30` (both signs), `rotated 90`, `rotated 180` (only what has no EXIF orientation), `dark`,
`over-exposed` (gamma), `320 px` and `jpeg q20`; scenes get each variant on a fixed subset.

Part `held-out`: scenes drawn from a separate seed and a disjoint half of the validation faces, and
their variants. Tune on `dev`; quote `held-out`. The photos are too few to split: they are `dev`.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from ml.serving.images import load_image

ROOT = Path(__file__).resolve().parent.parent
Box = tuple[float, float, float, float]  # x, y, width, height

VARIANTS = ["original", "gray", "sepia", "low-contrast", "rotated 15", "rotated 30", "rotated 90", "rotated 180",
            "dark", "over-exposed", "320 px", "jpeg q20"]
FACE_MIN, FACE_MAX = 20, 160
CANVAS = 400  # a UTKFace crop (200x200) is found on a gray canvas twice its size


@dataclass
class Item:
    name: str
    kind: str  # photo, scene, no-people
    part: str  # dev, held-out
    rgb: np.ndarray
    faces: int
    boxes: list[Box] | None  # None: only the count is known
    exif: bool = False  # the original had an EXIF orientation: no 90/180 copies


# ---------------------------------------------------------------- variants

def variant(item: Item, name: str, rng: np.random.Generator) -> tuple[np.ndarray, list[Box] | None, bytes | None]:
    """The item's image in variant `name`, its boxes, and the JPEG bytes for `jpeg q20`."""
    rgb, boxes = item.rgb, item.boxes
    f = rgb.astype(np.float32)
    if name == "original":
        return rgb, boxes, None
    if name == "gray":
        g = f @ np.array([0.299, 0.587, 0.114], np.float32)
        return _u8(np.repeat(g[..., None], 3, axis=2)), boxes, None
    if name == "sepia":
        m = np.array([[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]], np.float32)
        return _u8(f @ m.T), boxes, None
    if name == "low-contrast":
        return _u8((f - f.mean()) * 0.35 + f.mean()), boxes, None
    if name == "dark":
        return _u8(255 * (f / 255) ** 2.2 * 0.8), boxes, None
    if name == "over-exposed":
        return _u8(255 * (f / 255) ** 0.4 * 1.15), boxes, None
    if name == "320 px":
        h, w = rgb.shape[:2]
        s = 320 / max(h, w)
        small = Image.fromarray(rgb).resize((max(1, round(w * s)), max(1, round(h * s))), Image.Resampling.LANCZOS)
        return np.asarray(small), _scale(boxes, small.width / w, small.height / h), None
    if name == "jpeg q20":
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, "JPEG", quality=20)
        return rgb, boxes, buf.getvalue()
    if name.startswith("rotated"):
        angle = int(name.split()[1])
        if angle in (15, 30):
            angle *= 1 if rng.random() < 0.5 else -1
        elif angle == 90:
            angle = 90 if rng.random() < 0.5 else 270
        return _rotate(rgb, boxes, angle)
    raise ValueError(name)


def _u8(a: np.ndarray) -> np.ndarray:
    return np.clip(a + 0.5, 0, 255).astype(np.uint8)


def _scale(boxes: list[Box] | None, sx: float, sy: float) -> list[Box] | None:
    return None if boxes is None else [(x * sx, y * sy, w * sx, h * sy) for x, y, w, h in boxes]


def _rotate(rgb: np.ndarray, boxes: list[Box] | None, angle: int) -> tuple[np.ndarray, list[Box] | None, None]:
    """Counter-clockwise by `angle` degrees, canvas expanded (corners black); a box becomes the upright
    box around its rotated corners (larger than the face's own box: only used to tell found from missed)."""
    h, w = rgb.shape[:2]
    out = np.asarray(Image.fromarray(rgb).rotate(angle, Image.Resampling.BICUBIC, expand=True))
    if boxes is None:
        return out, None, None
    oh, ow = out.shape[:2]
    a = math.radians(angle)
    c, s = math.cos(a), math.sin(a)
    rotated = []
    for x, y, bw, bh in boxes:
        xs, ys = [], []
        for px, py in ((x, y), (x + bw, y), (x, y + bh), (x + bw, y + bh)):
            dx, dy = px - w / 2, py - h / 2
            xs.append(c * dx + s * dy + ow / 2)  # image y points down: counter-clockwise on screen
            ys.append(-s * dx + c * dy + oh / 2)
        rotated.append((min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)))
    return out, rotated, None


# ---------------------------------------------------------------- photos

def photos(faces_dir: Path) -> tuple[list[Item], list[Item]]:
    """(colour photos with people, photos without people) from `faces_dir`, upright as served."""
    from ml.serving.faces import DetectorSettings, FaceDetector

    with_people, without = [], []
    det = FaceDetector(DetectorSettings.v1(), size=1)
    try:
        for row in csv.DictReader((faces_dir / "manifest.tsv").open(), delimiter="\t"):
            expected, categories = row["expected_faces"], row["category"].split(",")
            if expected == "art" or expected.startswith("~"):
                continue
            data = (faces_dir / row["file"]).read_bytes()
            try:
                img = load_image(data)
                rgb = img.rgb
            except Exception:  # the animated GIF: not a served format, read here directly
                rgb = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
            exif = "exif" in categories
            name = Path(row["file"]).stem
            if int(expected) == 0:
                without.append(Item(name, "no-people", "dev", rgb, 0, [], exif))
            elif "gray" not in categories:  # colour photos only: their gray copies are made here
                found = det.detect(rgb)
                boxes = [(f.box.x, f.box.y, f.box.width, f.box.height) for f in found]
                with_people.append(Item(name, "photo", "dev", rgb, int(expected),
                                        boxes if len(found) == int(expected) else None, exif))
    finally:
        det.close()
    return with_people, without


# ---------------------------------------------------------------- textures

def texture(rng: np.random.Generator, w: int, h: int, kind: str) -> np.ndarray:
    """A procedural background without faces."""
    if kind == "stars":
        img = np.zeros((h, w, 3), np.float32)
        nebula = np.asarray(Image.fromarray(_u8(_noise(rng, w, h, 96) * 255)).filter(ImageFilter.GaussianBlur(20)))
        img += (nebula.astype(np.float32)[..., None] / 255) ** 2 * rng.uniform(10, 50, 3)  # faint nebula
        n = int(w * h * rng.uniform(0.001, 0.006))
        ys, xs = rng.integers(0, h, n), rng.integers(0, w, n)
        bright = np.minimum(rng.pareto(1.5, n) * 80 + 80, 255)
        img[ys, xs] = bright[:, None] * rng.uniform(0.75, 1.0, (n, 3))
        glow = np.asarray(Image.fromarray(_u8(img)).filter(ImageFilter.GaussianBlur(1.5))).astype(np.float32)
        return _u8(img + glow * 2.5)
    if kind == "foliage":
        base = np.stack([_noise(rng, w, h, s) for s in (8, 24, 80)]).mean(0)
        im = Image.fromarray(_u8(np.stack([base * 60 + 20, base * 140 + 40, base * 50 + 15], axis=2)))
        draw = ImageDraw.Draw(im)
        for _ in range(int(w * h / 300)):
            x, y, r = rng.integers(0, w), rng.integers(0, h), rng.integers(3, 18)
            g = int(rng.integers(50, 200))
            draw.ellipse((x - r, y - r // 2, x + r, y + r // 2), fill=(g // 3, g, g // 4))
        return np.asarray(im.filter(ImageFilter.GaussianBlur(0.8)))
    if kind == "clouds":
        base = np.stack([_noise(rng, w, h, s) for s in (16, 64, 200)]).mean(0)
        sky = np.array([90, 140, 210], np.float32)
        return _u8(sky * (1 - base[..., None]) + 245 * base[..., None])
    if kind == "stone":
        base = np.stack([_noise(rng, w, h, s) for s in (3, 12, 40, 120)]).mean(0)
        tint = rng.uniform(120, 200, 3)
        return _u8(base[..., None] * tint + 20)
    if kind == "fur":
        base = _noise(rng, w, h, 6)
        im = Image.fromarray(_u8(base * 255)).filter(ImageFilter.GaussianBlur(2))
        streak = np.asarray(im.resize((w, h // 4 + 1)).resize((w, h))).astype(np.float32) / 255
        tint = rng.uniform(80, 220, 3)
        return _u8(streak[..., None] * tint + _noise(rng, w, h, 60)[..., None] * 50)
    if kind == "pattern":
        im = Image.new("RGB", (w, h), tuple(int(v) for v in rng.integers(0, 255, 3)))
        draw = ImageDraw.Draw(im)
        step = int(rng.integers(12, 60))
        for i in range(0, max(w, h) * 2, step):
            colour = tuple(int(v) for v in rng.integers(0, 255, 3))
            if rng.random() < 0.5:
                draw.line((i, 0, i - h, h), fill=colour, width=step // 3)
            else:
                draw.rectangle((i % w, (i * 7) % h, i % w + step, (i * 7) % h + step), fill=colour)
        return np.asarray(im)
    if kind == "text":
        im = Image.new("RGB", (w, h), (235, 230, 215))
        draw = ImageDraw.Draw(im)
        for y in range(10, h - 10, int(rng.integers(14, 30))):
            x = 10
            while x < w - 20:
                word = "".join(chr(int(c)) for c in rng.integers(97, 123, int(rng.integers(2, 9))))
                draw.text((x, y), word, fill=(30, 30, 30))
                x += 7 * len(word) + 8
        return np.asarray(im)
    raise ValueError(kind)


TEXTURES = ["stars", "foliage", "clouds", "stone", "fur", "pattern", "text"]


def _noise(rng: np.random.Generator, w: int, h: int, cell: int) -> np.ndarray:
    """Smooth value noise in [0, 1] with features about `cell` pixels wide."""
    small = rng.random((max(2, h // cell + 2), max(2, w // cell + 2))).astype(np.float32)
    return np.asarray(Image.fromarray(small, mode="F").resize((w, h), Image.Resampling.BICUBIC)).clip(0, 1)


# ---------------------------------------------------------------- scenes

def face_pool(utkface: Path) -> list[tuple[str, Box]]:
    """Validation-split UTKFace crops with the detector's box of each face (see the module's docstring)."""
    from ml.serving.faces import DetectorSettings, FaceDetector

    cache = ROOT / "data" / "detection-set-cache" / "utkface-val-boxes.tsv"
    split = ROOT / "ml" / "splits" / "utkface.csv"
    names = sorted(r["file"] for r in csv.DictReader(split.open()) if r["split"] == "val")
    key = hashlib.sha256(("\n".join(names) + repr(DetectorSettings.v1())).encode()).hexdigest()[:16]
    if cache.exists() and cache.read_text().startswith(f"# {key}\n"):
        rows = [line.split("\t") for line in cache.read_text().splitlines()[1:]]
        return [(r[0], (float(r[1]), float(r[2]), float(r[3]), float(r[4]))) for r in rows]
    det = FaceDetector(DetectorSettings.v1(), size=1)
    pool = []
    try:
        for name in names:
            crop = np.asarray(Image.open(utkface / "images" / name).convert("RGB").resize((200, 200)))
            canvas = np.full((CANVAS, CANVAS, 3), 128, np.uint8)
            o = (CANVAS - 200) // 2
            canvas[o:o + 200, o:o + 200] = crop
            found = det.detect(canvas)
            if len(found) == 1:
                b = found[0].box
                pool.append((name, (b.x - o, b.y - o, b.width, b.height)))
    finally:
        det.close()
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(f"# {key}\n" + "".join(f"{n}\t{b[0]}\t{b[1]}\t{b[2]}\t{b[3]}\n" for n, b in pool))
    print(f"UTKFace validation crops with a box: {len(pool)} of {len(names)}")
    return pool


def _mask(size: int) -> np.ndarray:
    """A soft-edged rounded square: the crop blends into the background without a hard frame."""
    t = (np.arange(size) + 0.5) / size * 2 - 1
    r = (np.abs(t)[None, :] ** 4 + np.abs(t)[:, None] ** 4) ** 0.25
    return np.clip((1 - r) / 0.12, 0, 1).astype(np.float32)


def scene(rng: np.random.Generator, pool: list[tuple[str, Box]], utkface: Path,
          backgrounds: list[np.ndarray]) -> tuple[np.ndarray, list[Box]]:
    long_side = int(rng.integers(480, 1200))
    aspect = float(rng.choice([4 / 3, 3 / 2, 16 / 9, 1.0, 3 / 4, 2 / 3]))
    w, h = (long_side, int(long_side / aspect)) if aspect >= 1 else (int(long_side * aspect), long_side)
    if rng.random() < 0.4 and backgrounds:
        bg = backgrounds[int(rng.integers(len(backgrounds)))]
        bh, bw = bg.shape[:2]
        s = max(w / bw, h / bh) * rng.uniform(1.0, 1.6)
        big = Image.fromarray(bg).resize((math.ceil(bw * s), math.ceil(bh * s)), Image.Resampling.BILINEAR)
        x0, y0 = int(rng.integers(0, big.width - w + 1)), int(rng.integers(0, big.height - h + 1))
        canvas = np.asarray(big.crop((x0, y0, x0 + w, y0 + h))).astype(np.float32)
    else:
        canvas = texture(rng, w, h, str(rng.choice(TEXTURES))).astype(np.float32)
    overlapping = rng.random() < 0.3
    gray_faces = rng.random() < 0.3
    boxes: list[Box] = []
    want = int(rng.integers(1, 13))
    tries = 0
    while len(boxes) < want and tries < 200:
        tries += 1
        name, (fx, fy, fw, fh) = pool[int(rng.integers(len(pool)))]
        size = math.exp(rng.uniform(math.log(FACE_MIN), math.log(min(FACE_MAX, 0.45 * min(w, h)))))
        s = size / fw  # crop pixels to scene pixels
        side = max(4, round(200 * s))
        x = int(rng.integers(-round(fx * s) // 2, w - side + 1))
        y = int(rng.integers(-round(fy * s) // 2, h - side + 1))
        box = (x + fx * s, y + fy * s, fw * s, fh * s)
        if box[0] < 0 or box[1] < 0 or box[0] + box[2] > w or box[1] + box[3] > h:
            continue
        if not _placeable(box, boxes, x, y, side, overlapping):
            continue
        crop = Image.open(utkface / "images" / name).convert("RGB").resize((side, side), Image.Resampling.LANCZOS)
        face = np.asarray(crop).astype(np.float32)
        if gray_faces and rng.random() < 0.5:
            face = np.repeat((face @ np.array([0.299, 0.587, 0.114], np.float32))[..., None], 3, axis=2)
        m = _mask(side)[..., None]
        ys, xs = slice(max(0, y), min(h, y + side)), slice(max(0, x), min(w, x + side))
        fsl = (slice(ys.start - y, ys.stop - y), slice(xs.start - x, xs.stop - x))
        canvas[ys, xs] = canvas[ys, xs] * (1 - m[fsl]) + face[fsl] * m[fsl]
        boxes.append(box)
    return _u8(canvas), boxes


def _placeable(box: Box, boxes: list[Box], x: int, y: int, side: int, overlapping: bool) -> bool:
    """A new crop (at x, y, side) may cover at most a quarter of an earlier face's box, and only in a
    scene that allows overlap (the new face is pasted on top, so it is never covered itself)."""
    for bx, by, bw, bh in boxes:
        ix = max(0.0, min(bx + bw, x + side) - max(bx, x))
        iy = max(0.0, min(by + bh, y + side) - max(by, y))
        covered = ix * iy / (bw * bh)
        if covered > (0.25 if overlapping else 0.0):
            return False
        # keep face centres apart, so that two faces are never one blob
        if abs(bx + bw / 2 - (box[0] + box[2] / 2)) < 0.5 * max(bw, box[2]) and \
                abs(by + bh / 2 - (box[1] + box[3] / 2)) < 0.5 * max(bh, box[3]):
            return False
    return True


# ---------------------------------------------------------------- main

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", type=Path, default=ROOT.parent / "shared" / "data" / "faces")
    parser.add_argument("--utkface", type=Path, default=ROOT.parent / "shared" / "data" / "utkface")
    parser.add_argument("--out", type=Path, default=ROOT / "data" / "detection-set")
    parser.add_argument("--scenes", type=int, default=300, help="dev scenes")
    parser.add_argument("--held-out", type=int, default=100, help="held-out scenes")
    parser.add_argument("--textures", type=int, default=60, help="procedural no-people images")
    parser.add_argument("--variant-share", type=float, default=0.25, help="share of scenes each variant gets")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    images = args.out / "images"
    images.mkdir(parents=True, exist_ok=True)
    for old in images.iterdir():
        old.unlink()
    with_people, without = photos(args.faces)
    pool = face_pool(args.utkface)
    halves = {"dev": [p for p in pool if _half(p[0]) == 0], "held-out": [p for p in pool if _half(p[0]) == 1]}
    backgrounds = [i.rgb for i in without]

    items = list(with_people) + list(without)
    for i in range(args.textures):
        rng = np.random.default_rng([args.seed, 1, i])
        long_side = int(rng.integers(400, 1400))
        w, h = long_side, int(long_side * rng.uniform(0.6, 1.0))
        kind = TEXTURES[i % len(TEXTURES)]
        items.append(Item(f"texture-{kind}-{i:03d}", "no-people", "dev", texture(rng, w, h, kind), 0, []))
    scenes: list[Item] = []
    for part, count, seed in (("dev", args.scenes, args.seed), ("held-out", args.held_out, args.seed + 1000)):
        for i in range(count):
            rng = np.random.default_rng([seed, 2, i])
            rgb, boxes = scene(rng, halves[part], args.utkface, backgrounds)
            scenes.append(Item(f"scene-{part}-{i:03d}", "scene", part, rgb, len(boxes), boxes))

    rows = []
    for n, item in enumerate(items + scenes):
        for v, name in enumerate(VARIANTS):
            if name in ("rotated 90", "rotated 180") and item.exif:
                continue
            rng = np.random.default_rng([args.seed, 3, n, v])
            if item.kind == "scene" and name != "original" and rng.random() >= args.variant_share:
                continue
            rgb, boxes, jpeg = variant(item, name, rng)
            file = f"{item.name}--{name.replace(' ', '-')}.jpg"
            if jpeg is None:  # stored at quality 95, chroma at full resolution: near-lossless, a tenth of a PNG
                buf = io.BytesIO()
                Image.fromarray(rgb).save(buf, "JPEG", quality=95, subsampling=0)
                jpeg = buf.getvalue()
            (images / file).write_bytes(jpeg)
            rows.append((file, item.kind, name, item.part, item.faces,
                         "" if boxes is None else ";".join(",".join(f"{c:.1f}" for c in b) for b in boxes)))
    with (args.out / "manifest.tsv").open("w") as f:
        f.write("file\tkind\tvariant\tpart\tfaces\tboxes\n")
        for r in rows:
            f.write("\t".join(str(c) for c in r) + "\n")
    faces = sum(r[4] for r in rows)
    print(f"{len(rows)} images, {faces} faces, in {args.out}")


def _half(name: str) -> int:
    return hashlib.sha256(name.encode()).digest()[0] & 1


if __name__ == "__main__":
    main()
