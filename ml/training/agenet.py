"""The age network: Cydral's ResNet-10 (dlib-models, CC0), written as a plain torch module.

The network classifies a 64x64 aligned face chip into one-year age classes; the age is the
expected value of that distribution and the interval a central range of it. Batch-norm in the
original is already folded into a per-channel scale and offset (dlib's `affine` layer), kept here
as parameters so that fine-tuning can move them; `fold()` merges them into the convolutions for
serving.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
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
        # The main branch's padding (bottom, right) when the input size is fixed: `ml.training.onnx_export` sets it,
        # so that the exported graph holds constants instead of computing them from shapes each run.
        self.fixed_pad: tuple[int, int] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(F.relu(self.conv1(x)))
        if self.down:
            x = F.avg_pool2d(x, 2)
            x = F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))
            bottom, right = self.fixed_pad or (x.shape[2] - y.shape[2], x.shape[3] - y.shape[3])
            y = F.pad(y, (0, right, 0, bottom))
        return F.relu(x + y)


class AgeNet(nn.Module):
    """ResNet-10: a 7x7 stem, five residual blocks (64, 128, 128, 256, 256), global average
    pooling and one linear layer over `num_classes` one-year age classes. `extra_blocks` appends
    more 256-channel blocks (see `deepen`)."""

    def __init__(self, num_classes: int = 81, extra_blocks: int = 0) -> None:
        super().__init__()
        self.stem: nn.Module = ConvAffine(3, 64, 7, 2, 0)
        self.blocks = nn.Sequential(
            ResidualBlock(64, 64),
            ResidualBlock(64, 128),
            ResidualBlock(128, 128),
            ResidualBlock(128, 256),
            ResidualBlock(256, 256),
            *(ResidualBlock(256, 256) for _ in range(extra_blocks)),
        )
        self.extra_blocks = extra_blocks
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

    def deepen(self, extra_blocks: int) -> AgeNet:
        """Append 256-channel blocks that start as the identity (their last scale is zero and their
        input is already non-negative), so the deeper network first computes what this one did."""
        for _ in range(extra_blocks):
            block = ResidualBlock(256, 256).to(self.head.weight.device)
            with torch.no_grad():
                block.conv2.scale.zero_()
                block.conv2.conv.weight.mul_(0.1)
            self.blocks.append(block)
        self.extra_blocks += extra_blocks
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
