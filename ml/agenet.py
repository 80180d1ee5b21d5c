"""The age network: Cydral's ResNet-10 (dlib-models, CC0), written as a plain torch module.

The network classifies a 64x64 aligned face chip into one-year age classes; the age is the
expected value of that distribution and the interval a central range of it. Batch-norm in the
original is already folded into a per-channel scale and offset (dlib's `affine` layer), kept here
as parameters so that fine-tuning can move them; `fold()` merges them into the convolutions for
serving.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

# Channel means of the original training data; inputs are (pixel - mean) / 256.
CHANNEL_MEANS = (122.781998, 117.000999, 104.297997)
CHIP_SIZE = 64


def class_ages(num_classes: int) -> torch.Tensor:
    """The age each class stands for: 0.25 for the first (babies), then 1, 2, 3, ... years."""
    ages = torch.arange(num_classes, dtype=torch.float32)
    ages[0] = 0.25
    return ages


class ConvAffine(nn.Module):
    """Convolution followed by a per-channel scale and offset (a frozen batch-norm)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, padding: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding, bias=True)
        self.scale = nn.Parameter(torch.ones(cout))
        self.offset = nn.Parameter(torch.zeros(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) * self.scale.view(1, -1, 1, 1) + self.offset.view(1, -1, 1, 1)

    def folded(self) -> nn.Conv2d:
        """One convolution computing the same thing, for inference."""
        conv = self.conv
        out = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding)
        with torch.no_grad():
            out.weight.copy_(conv.weight * self.scale.view(-1, 1, 1, 1))
            out.bias.copy_(conv.bias * self.scale + self.offset)
        return out


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions plus a shortcut. A downsampling block halves the size with a
    stride-2 unpadded convolution; its shortcut is 2x2 average pooling with zero channels
    appended (no 1x1 projection), and the main branch is zero-padded at the bottom and right to
    the shortcut's size, as dlib does."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.down = cout != cin
        self.extra_channels = cout - cin
        self.conv1: nn.Module = ConvAffine(cin, cout, 3, 2 if self.down else 1, 0 if self.down else 1)
        self.conv2: nn.Module = ConvAffine(cout, cout, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(F.relu(self.conv1(x)))
        if self.down:
            x = F.avg_pool2d(x, 2)
            x = F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))
            y = F.pad(y, (0, x.shape[3] - y.shape[3], 0, x.shape[2] - y.shape[2]))
        return F.relu(x + y)


class AgeNet(nn.Module):
    """ResNet-10: a 7x7 stem, five residual blocks (64, 128, 128, 256, 256), global average
    pooling and one linear layer over `num_classes` one-year age classes."""

    def __init__(self, num_classes: int = 81) -> None:
        super().__init__()
        self.stem: nn.Module = ConvAffine(3, 64, 7, 2, 0)
        self.blocks = nn.Sequential(
            ResidualBlock(64, 64),
            ResidualBlock(64, 128),
            ResidualBlock(128, 128),
            ResidualBlock(128, 256),
            ResidualBlock(256, 256),
        )
        self.head = nn.Linear(256, num_classes)
        self.register_buffer("means", torch.tensor(CHANNEL_MEANS).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("ages", class_ages(num_classes), persistent=False)

    @property
    def num_classes(self) -> int:
        return self.head.out_features

    def preprocess(self, chips: torch.Tensor) -> torch.Tensor:
        """uint8 chips N x H x W x 3 (RGB) to the normalised N x 3 x H x W input."""
        x = chips.permute(0, 3, 1, 2).float()
        return (x - self.means) / 256.0

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.stem(x)), 3, 2)
        return self.blocks(x).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised input to class logits."""
        return self.head(self.features(x))

    def fold(self) -> AgeNet:
        """Merge every scale and offset into its convolution (same outputs, fewer operations)."""
        self.stem = _fold(self.stem)
        for block in self.blocks:
            block.conv1 = _fold(block.conv1)
            block.conv2 = _fold(block.conv2)
        return self

    def widen(self, num_classes: int) -> AgeNet:
        """Extend the head to more age classes. New classes start from the last old one with a
        lower bias, so the widened network predicts nearly what it did before fine-tuning."""
        old = self.head
        if num_classes <= old.out_features:
            return self
        head = nn.Linear(old.in_features, num_classes)
        with torch.no_grad():
            head.weight[: old.out_features] = old.weight
            head.bias[: old.out_features] = old.bias
            head.weight[old.out_features :] = old.weight[-1]
            head.bias[old.out_features :] = old.bias[-1] - 3.0
        self.head = head
        self.ages = class_ages(num_classes).to(old.weight.device)
        return self


def _fold(module: nn.Module) -> nn.Module:
    return module.folded() if isinstance(module, ConvAffine) else module


@dataclass(frozen=True, slots=True)
class AgeDistribution:
    """Summary of one face's predicted age distribution, in years."""

    age: float
    low: float
    high: float
    spread: float


def summarise(probs: torch.Tensor, ages: torch.Tensor, coverage: float = 0.8) -> list[AgeDistribution]:
    """Expected age, central `coverage` interval and standard deviation of each row of `probs`.

    Class k stands for the year [k - 0.5, k + 0.5] (class 0 for [0, 0.5]); the interval's ends are
    read off the piecewise-linear cumulative distribution over those bins.
    """
    p = probs.double().cpu().numpy()
    a = ages.double().cpu().numpy()
    mean = p @ a
    spread = np.sqrt(np.maximum((p * (a[None, :] - mean[:, None]) ** 2).sum(axis=1), 0.0))
    edges = np.concatenate([[0.0], np.arange(len(a), dtype=np.float64) + 0.5])
    cdf = np.concatenate([np.zeros((len(p), 1)), np.cumsum(p, axis=1)], axis=1)
    tail = (1.0 - coverage) / 2.0
    out = []
    for i in range(len(p)):
        c = np.maximum.accumulate(np.clip(cdf[i] / cdf[i, -1], 0.0, 1.0))
        low = float(np.interp(tail, c, edges))
        high = float(np.interp(1.0 - tail, c, edges))
        out.append(AgeDistribution(float(mean[i]), low, high, float(spread[i])))
    return out


@dataclass
class AgeModel:
    """The network plus what serving needs to read its output: version and temperature."""

    net: AgeNet
    version: str
    temperature: float = 1.0
    mirror: bool = False

    @torch.inference_mode()
    def probabilities(self, chips: np.ndarray) -> torch.Tensor:
        """Class probabilities for uint8 chips N x 64 x 64 x 3, all in one forward pass."""
        x = self.net.preprocess(torch.from_numpy(np.ascontiguousarray(chips)))
        n = x.shape[0]
        if self.mirror:
            x = torch.cat([x, x.flip(3)])
        probs = torch.softmax(self.net(x) / self.temperature, dim=1)
        if self.mirror:
            probs = (probs[:n] + probs[n:]) / 2
        return probs

    def estimate(self, chips: np.ndarray, coverage: float = 0.8) -> list[AgeDistribution]:
        if len(chips) == 0:
            return []
        return summarise(self.probabilities(chips), self.net.ages, coverage)


def save_age_model(path: Path, net: AgeNet, version: str, temperature: float = 1.0, mirror: bool = False,
                   extra: dict[str, str] | None = None) -> None:
    """Weights as safetensors, with what is needed to use them in the file's metadata."""
    meta = {
        "version": version,
        "num_classes": str(net.num_classes),
        "temperature": repr(float(temperature)),
        "mirror": json.dumps(bool(mirror)),
        **(extra or {}),
    }
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    save_file(state, str(path), metadata=meta)


def read_metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def load_age_model(path: Path, *, fold: bool = True) -> AgeModel:
    meta = read_metadata(path)
    net = AgeNet(num_classes=int(meta["num_classes"]))
    net.load_state_dict(load_file(str(path)))
    net.eval()
    if fold:
        net.fold()
    return AgeModel(
        net=net,
        version=meta["version"],
        temperature=float(meta.get("temperature", "1.0")),
        mirror=json.loads(meta.get("mirror", "false")),
    )
