"""Small example models whose source ships to the sites as is (torch, nn and F only)."""

from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F


class SmallCNN(nn.Module):
    """Two 3x3 conv layers with max-pooling and a linear head; for square images whose side is a multiple of 4."""

    def __init__(
        self, channels: int = 1, image_size: int = 32, num_classes: int = 10, width: int = 16
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.head = nn.Linear(2 * width * (image_size // 4) ** 2, num_classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.head(x.flatten(1))
