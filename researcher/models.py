"""Small example models whose source ships to the sites as is (torch, nn and F only)."""

from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F


class SmallCNN(nn.Module):
    """Two 3x3 conv layers with max-pooling and a linear head.

    Parameters
    ----------
    channels : int, default 1
        Image channels (1 for L, 3 for RGB).
    image_size : int, default 32
        The side of the square images, a multiple of 4 (the model pools twice).
    num_classes : int, default 10
        Number of labels (the model outputs one logit per label).
    width : int, default 16
        Channels of the first conv layer (the second has twice as many).

    Examples
    --------
    >>> import torch
    >>> SmallCNN(channels=1, image_size=16, num_classes=4)(torch.zeros(2, 1, 16, 16)).shape
    torch.Size([2, 4])
    """

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
