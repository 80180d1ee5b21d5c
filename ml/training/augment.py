"""Face-friendly augmentation of a batch of 80 px training chips, on whatever device they are on.

Each chip is cropped back to the network's input with a random similarity transform (mirror,
scale, small rotation and shift) and given random contrast, brightness and, sometimes, no colour.
The 80 px chip has an 8 px margin around the 64 px serving chip, so these moves never run out of
face. With every factor at its neutral value the output is the serving chip.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Augmentation:
    flip: float = 0.5  # probability
    scale: tuple[float, float] = (0.92, 1.08)
    rotate: float = 5.0  # degrees, either way
    shift: float = 3.0  # pixels of the output, either way
    contrast: tuple[float, float] = (0.75, 1.25)
    brightness: float = 20.0  # grey levels, either way
    grayscale: float = 0.1  # probability

    @classmethod
    def none(cls) -> Augmentation:
        return cls(0.0, (1.0, 1.0), 0.0, 0.0, (1.0, 1.0), 0.0, 0.0)


def _uniform(n: int, lo: float, hi: float, g: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.rand(n, generator=g, device=device) * (hi - lo) + lo


def augment(chips: torch.Tensor, aug: Augmentation, g: torch.Generator, out: int = 64,
            margin_px: int = 8) -> torch.Tensor:
    """uint8 chips N x S x S x 3 whose centre (all but `margin_px` on each side) is the serving chip,
    to float N x out x out x 3 in pixel units (0-255), ready for the network's `preprocess`."""
    n, size = chips.shape[0], chips.shape[1]
    dev = chips.device
    x = chips.permute(0, 3, 1, 2).float()
    inner = (size - 2 * margin_px) / size  # share of the chip the output covers
    s = inner / _uniform(n, *aug.scale, g, dev)
    a = _uniform(n, -aug.rotate, aug.rotate, g, dev) * math.pi / 180
    flip = torch.where(torch.rand(n, generator=g, device=dev) < aug.flip, -1.0, 1.0)
    shift = 2 * aug.shift / out * inner
    tx = _uniform(n, -shift, shift, g, dev)
    ty = _uniform(n, -shift, shift, g, dev)
    theta = torch.stack([
        torch.stack([s * torch.cos(a) * flip, -s * torch.sin(a), tx], dim=1),
        torch.stack([s * torch.sin(a) * flip, s * torch.cos(a), ty], dim=1),
    ], dim=1)
    grid = F.affine_grid(theta, [n, 3, out, out], align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    c = _uniform(n, *aug.contrast, g, dev).view(n, 1, 1, 1)
    b = _uniform(n, -aug.brightness, aug.brightness, g, dev).view(n, 1, 1, 1)
    x = (x - mean) * c + mean + b
    gray = torch.rand(n, generator=g, device=dev) < aug.grayscale
    if gray.any():
        lum = (x * torch.tensor([0.299, 0.587, 0.114], device=dev).view(1, 3, 1, 1)).sum(1, keepdim=True)
        x = torch.where(gray.view(n, 1, 1, 1), lum.expand_as(x), x)
    return x.clamp(0, 255).permute(0, 2, 3, 1)
