"""The project's first design: a VGG-style regressor trained from scratch.

Blocks of 3x3 convolution - batch-norm - ReLU with 64, 64 | 128, 128 | 256, 256, 256 |
512, 512, 512 channels, each group followed by 2x2 max-pooling, then flatten, linear to 50, ReLU,
linear to 1, ReLU: the age in years. Trained with MSE, Adam at 1e-4, batch 12. The input size is
configurable (the first design used 198x198); chips are resized to it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ml.training.agenet import CHANNEL_MEANS

GROUPS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512))


class VGGRegressor(nn.Module):
    def __init__(self, input_size: int = 64) -> None:
        super().__init__()
        self.input_size = input_size
        layers: list[nn.Module] = []
        cin = 3
        for group in GROUPS:
            for cout in group:
                layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
                cin = cout
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        side = input_size // 2 ** len(GROUPS)
        self.regressor = nn.Sequential(nn.Flatten(), nn.Linear(512 * side * side, 50), nn.ReLU(inplace=True),
                                       nn.Linear(50, 1), nn.ReLU())
        self.register_buffer("means", torch.tensor(CHANNEL_MEANS).view(1, 3, 1, 1), persistent=False)

    def preprocess(self, chips: torch.Tensor) -> torch.Tensor:
        """uint8 chips N x H x W x 3 to normalised N x 3 x input_size x input_size."""
        x = (chips.permute(0, 3, 1, 2).float() - self.means) / 256.0
        if x.shape[-1] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised input to ages in years, shape N."""
        return self.regressor(self.features(x)).squeeze(1)
