"""Camera-like frames made from a fixture photo, as JPEG for the live endpoint and as a y4m video for
chromium's fake camera (`--use-file-for-fake-video-capture=FILE.y4m`)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from tests.conftest import FIXTURES

WIDTH, HEIGHT = 480, 360


def astronaut_frame(width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    """The astronaut photo (512x512, her face top middle) cut to 4:3 and scaled: RGB, uint8 (height, width, 3)."""
    img = Image.open(FIXTURES / "astronaut.png").convert("RGB").crop((0, 0, 512, 384))
    return np.asarray(img.resize((width, height), Image.Resampling.LANCZOS))


def camera_frames(n: int, *, seed: int = 0, noise: float = 4.0, shake: int = 2) -> list[np.ndarray]:
    """`n` frames of a still face as a webcam sees it: sensor noise (Gaussian, `noise` levels) and a
    hand's shake (the picture moved by up to `shake` pixels)."""
    rng = np.random.default_rng(seed)
    base = astronaut_frame().astype(np.float32)
    frames = []
    for _ in range(n):
        dx, dy = rng.integers(-shake, shake + 1, 2) if shake else (0, 0)
        moved = np.roll(base, (int(dy), int(dx)), axis=(0, 1))
        frames.append(np.clip(moved + rng.normal(0, noise, moved.shape), 0, 255).astype(np.uint8))
    return frames


def jpeg(frame: np.ndarray, quality: int = 80) -> bytes:
    out = io.BytesIO()
    Image.fromarray(frame).save(out, "JPEG", quality=quality)
    return out.getvalue()


def write_y4m(path: Path, frames: list[np.ndarray], fps: int = 15) -> Path:
    """A YUV4MPEG2 file, 4:2:0 (the layout chromium's fake camera reads): a header line, then per
    frame "FRAME\\n" and the Y plane at full size, U and V at half width and height (BT.601, full range)."""
    height, width = frames[0].shape[:2]
    assert width % 2 == 0 and height % 2 == 0, "4:2:0 needs even sides"
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for frame in frames:
            rgb = frame.astype(np.float32)
            r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
            y = 0.299 * r + 0.587 * g + 0.114 * b
            u = 128 - 0.168736 * r - 0.331264 * g + 0.5 * b
            v = 128 + 0.5 * r - 0.418688 * g - 0.081312 * b
            # Chroma: the mean of each 2x2 block.
            u = u.reshape(height // 2, 2, width // 2, 2).mean(axis=(1, 3))
            v = v.reshape(height // 2, 2, width // 2, 2).mean(axis=(1, 3))
            f.write(b"FRAME\n")
            for plane in (y, u, v):
                f.write(np.clip(np.rint(plane), 0, 255).astype(np.uint8).tobytes())
    return path
