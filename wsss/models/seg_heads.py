"""Segmentation heads: DeepLab-v2 ASPP and LargeFOV on the final map, SegFormer-style all-MLP on
several levels. ``SEG_HEADS`` maps a config name to the class."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ASPP(nn.Module):
    """DeepLab-v2 ASPP: parallel dilated 3x3 convs straight to class scores, summed."""

    def __init__(self, in_channels: list[int], num_classes: int, rates: tuple[int, ...] = (6, 12, 18, 24)):
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Conv2d(in_channels[-1], num_classes, 3, padding=r, dilation=r, bias=True) for r in rates)
        for conv in self.branches:
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = features[-1]
        return sum(branch(x) for branch in self.branches)


class LargeFOV(nn.Module):
    """DeepLab-LargeFOV style: dilated 3x3 conv(s) + ReLU (+ dropout), then 1x1 to classes.

    Defaults are DeepLab-v1 LargeFOV's fc6/fc7 on a stride-16 map (``convs=2``, 1024 channels,
    dilation 12); ToCo's variant is ``channels=512, dilation=5, bias=False, dropout=0``.
    """

    def __init__(self, in_channels: list[int], num_classes: int, channels: int = 1024, dilation: int = 12,
                 convs: int = 2, bias: bool = True, dropout: float = 0.5):
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels[-1]
        for i in range(convs):
            k, d = (3, dilation) if i == 0 else (1, 1)
            layers += [nn.Conv2d(c, channels, k, padding=d if k == 3 else 0, dilation=d, bias=bias), nn.ReLU(True)]
            if dropout > 0:
                layers.append(nn.Dropout2d(dropout))
            c = channels
        layers.append(nn.Conv2d(c, num_classes, 1, bias=bias))
        self.net = nn.Sequential(*layers)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.net(features[-1])


class SegFormerHead(nn.Module):
    """All-MLP decoder (SegFormer): each level projected to ``embed_dim``, resized to the finest,
    concatenated, fused by 1x1 conv + BN + ReLU, dropout, 1x1 to classes. ``levels`` picks which
    backbone outputs to use (default: four evenly spaced ones, the last included). ``embed_dim``
    defaults to 128 (a project choice for CPU runs; SegFormer-B0 uses 256, B1-B5 768)."""

    def __init__(self, in_channels: list[int], num_classes: int, embed_dim: int = 128,
                 levels: tuple[int, ...] | None = None, dropout: float = 0.1):
        super().__init__()
        n = len(in_channels)
        if levels is None:
            levels = tuple(sorted({round(n * (i + 1) / 4) - 1 for i in range(4)})) if n >= 4 else tuple(range(n))
        self.levels = tuple(levels)
        self.proj = nn.ModuleList(nn.Conv2d(in_channels[i], embed_dim, 1) for i in self.levels)
        self.fuse = nn.Sequential(nn.Conv2d(embed_dim * len(self.levels), embed_dim, 1, bias=False),
                                  nn.BatchNorm2d(embed_dim), nn.ReLU(True))
        self.dropout = nn.Dropout2d(dropout)
        self.classify = nn.Conv2d(embed_dim, num_classes, 1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        maps = [proj(features[i]) for proj, i in zip(self.proj, self.levels)]
        size = max((m.shape[-2:] for m in maps), key=lambda s: s[0] * s[1])
        maps = [m if m.shape[-2:] == size else F.interpolate(m, size=size, mode="bilinear", align_corners=False)
                for m in maps]
        return self.classify(self.dropout(self.fuse(torch.cat(maps, 1))))


SEG_HEADS: dict[str, type[nn.Module]] = {"aspp": ASPP, "largefov": LargeFOV, "segformer": SegFormerHead}
