"""Degraded copies of a photo, to calibrate and check the age interval on poor faces (training side).

The four the interval is held to (issue 23): `px40`, the photo shrunk to 40 px on its long side (a
face about 40 px wide, as in a group photo); `blur2`, Gaussian blur of sigma 2 px; `gray`; and
`jpeg15`, JPEG quality 15. Each copy goes through the whole serving pipeline again (decode,
detection, alignment), as an uploaded photo would.
"""

from __future__ import annotations

import io

from PIL import Image, ImageFilter

DEGRADATIONS = ("px40", "blur2", "gray", "jpeg15")


def degrade(data: bytes, name: str) -> bytes:
    """The encoded photo `data` degraded by `name` (one of `DEGRADATIONS`)."""
    if name not in DEGRADATIONS:
        raise ValueError(f"unknown degradation {name!r}: one of {', '.join(DEGRADATIONS)}")
    with Image.open(io.BytesIO(data)) as img:
        rgb = img.convert("RGB")
    buf = io.BytesIO()
    if name == "px40":
        w, h = rgb.size
        f = 40 / max(w, h)
        rgb.resize((max(1, round(w * f)), max(1, round(h * f))), Image.Resampling.BILINEAR).save(buf, "PNG")
    elif name == "blur2":
        rgb.filter(ImageFilter.GaussianBlur(2)).save(buf, "JPEG", quality=95)
    elif name == "gray":
        rgb.convert("L").convert("RGB").save(buf, "JPEG", quality=95)
    else:
        rgb.save(buf, "JPEG", quality=15)
    return buf.getvalue()
