"""Large JPEGs decoded at each DCT scale (Pillow's `draft`): what the decode costs and what the ages become.

    .venv/bin/python -m bench.decode_scale [--repeat 15] [--faces DIR]

The question: would decoding a large JPEG smaller than the served path does (its long side reduced to
no less than `ml.images.DEFAULT_WORK_SIDE`, 1000 px) and going back to that size only where faces need
it save time without moving the ages? For the 4352x2903 one-face photo of ../shared/data/faces (a
progressive JPEG, as many photos from the web are), the same pixels saved as a baseline JPEG (as
cameras and phones save them), and the 6-face group photo enlarged 3x (baseline), at scales 1/1, 1/2,
1/4 and 1/8:
- decode: median CPU ms of Pillow's decode and its ratio to the median CPU ms of decoding
  bench.http_latency's 640x480 JPEG, measured alternately in this process (the unit of issue 22's cost
  goals; CPU time, which a busy machine blurs much less than the time);
- ages: the served predictor (one thread) on the photo decoded at that scale, and the age network on
  chips cut at that scale from the boxes found at full size (what the decode alone moves, without the
  detector's boxes moving too), and the largest change of a face's age from the full-size decode.
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from pathlib import Path

import numpy as np
from PIL import Image

from bench.common import ROOT
from bench.http_latency import photo_640x480_jpeg
from bench.machine import describe
from ml import LoadedImage, Predictor, load_image
from ml.serving.images import DEFAULT_WORK_SIDE

FACES = ROOT.parent / "shared" / "data" / "faces"
SCALES = (1, 2, 4, 8)


def decode(data: bytes, scale: int) -> LoadedImage:
    """The JPEG decoded at 1/scale (libjpeg's DCT scaling), as the service decodes (EXIF, RGB)."""
    width, height = Image.open(io.BytesIO(data)).size
    # load_image drafts to no less than `work_side` once the photo is twice that: ask for this scale
    return load_image(data, work_side=max(width, height) // scale if scale > 1 else None)


def cpu(fn, *args) -> float:  # noqa: ANN001
    t = time.process_time()
    fn(*args)
    return time.process_time() - t


def pillow(data: bytes, scale: int) -> None:
    img = Image.open(io.BytesIO(data))
    if scale > 1:
        img.draft("RGB", (img.width // scale, img.height // scale))
    img.load()


def jpeg(img: Image.Image, **options: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", **options)
    return buf.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--faces", type=Path, default=FACES, help="the shared photos")
    args = parser.parse_args()
    print(describe())

    large = (args.faces / "large_single_4352x2903.jpg").read_bytes()
    group = Image.open(args.faces / "multi_insightface_t1.jpg").convert("RGB")
    photos = {
        "4352x2903, progressive": large,
        "4352x2903, baseline q92": jpeg(Image.open(io.BytesIO(large)).convert("RGB"), quality=92),
        "3840x2658, 6 faces, baseline": jpeg(group.resize((3840, 2658), Image.Resampling.LANCZOS), quality=92),
    }
    unit = photo_640x480_jpeg()
    predictor = Predictor.load(threads=1)
    print(f"\nunit: the Pillow decode of the 640x480 JPEG, alternating with each decode; {args.repeat} runs, "
          f"medians of CPU time. The served path decodes at the largest scale that keeps the long side >= "
          f"{DEFAULT_WORK_SIDE} px (*). Ages: detected at this scale | with the boxes found at 1/1; change: the "
          "largest change of a face's age (boxes found at 1/1) from the full-size decode")
    print(f"  {'photo':28} {'scale':>5} {'pixels':>9} {'CPU ms':>7} {'ratio':>6} {'change':>6}   ages")
    for name, data in photos.items():
        full = load_image(data, work_side=None)
        boxes = [f.box for f in predictor.detector.detect(full.rgb)]
        served = round(1 / load_image(data).scale)
        reference = None
        for scale in SCALES:
            times, units = [], []
            for _ in range(args.repeat):
                units.append(cpu(pillow, unit, 1))
                times.append(cpu(pillow, data, scale))
            img = decode(data, scale)
            ages = [f.age for f in predictor.predict(img).faces]
            chips = predictor.aligner.chips(img.rgb, [b.scaled(img.scale) for b in boxes])
            fixed = np.array([e.age for e in predictor.age_model.estimate(chips)])
            reference = fixed if reference is None else reference
            change = float(np.abs(fixed - reference).max()) if len(fixed) else 0.0
            ms, u = statistics.median(times), statistics.median(units)
            label = ("*1/" if scale == served else "1/") + str(scale)
            print(f"  {name:28} {label:>5} {img.rgb.shape[1]:>4}x{img.rgb.shape[0]:<4} {ms * 1000:7.1f} "
                  f"{ms / u:5.1f}x {change:6.2f}   {' '.join(f'{a:.2f}' for a in ages)} | "
                  f"{' '.join(f'{a:.2f}' for a in fixed)}")
    predictor.close()


if __name__ == "__main__":
    main()
