"""Pooling functions and the bias-free 1x1 classifier of WSSS classification networks."""

from __future__ import annotations

import torch
from torch import nn

from wsss.errors import ConfigError


def global_average_pool(x: torch.Tensor) -> torch.Tensor:
    """[B, D, h, w] -> [B, D, 1, 1]."""
    return x.mean(dim=(2, 3), keepdim=True)


def global_max_pool(x: torch.Tensor) -> torch.Tensor:
    """[B, D, h, w] -> [B, D, 1, 1]."""
    return x.amax(dim=(2, 3), keepdim=True)


def softmax_pool(x: torch.Tensor, temperature: float) -> torch.Tensor:
    """Softmax-weighted average over positions, per channel: [B, D, h, w] -> [B, D, 1, 1].

    ``temperature -> 0`` approaches max pooling, ``-> inf`` average pooling.
    """
    flat = x.flatten(2)
    weights = torch.softmax(flat / temperature, dim=-1)
    return (weights * flat).sum(-1)[..., None, None]


class ClassifierHead(nn.Module):
    """Pooling, then a bias-free 1x1 conv to ``num_classes`` logits (CAM = the same conv per position).

    Pooling commutes with the 1x1 conv for ``gap`` (and is monotone for ``gmp``), so the CAM of this
    head is exact for average pooling. A wider kernel (MCTformer-V2: 3x3 with bias) convolves the
    map first and pools the class maps. ``prior_bias`` adds a learned per-class offset to the logits
    only: a class's prior then has a place outside its map, and :meth:`cam` never sees it.
    """

    def __init__(self, in_channels: int, num_classes: int, pooling: str = "gap", temperature: float = 1.0,
                 kernel_size: int = 1, bias: bool = False, prior_bias: bool = False):
        super().__init__()
        if pooling not in ("gap", "gmp", "softmax"):
            raise ConfigError(f"classifier.pooling must be gap, gmp or softmax; got {pooling!r}")
        self.pooling, self.temperature = pooling, temperature
        self.classifier = nn.Conv2d(in_channels, num_classes, kernel_size=kernel_size, padding=kernel_size // 2,
                                    bias=bias)
        self.prior = nn.Parameter(torch.zeros(num_classes)) if prior_bias else None

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        if self.pooling == "gap":
            return global_average_pool(x)
        if self.pooling == "gmp":
            return global_max_pool(x)
        return softmax_pool(x, self.temperature)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, D, h, w] -> logits [B, num_classes]."""
        if self.classifier.kernel_size != (1, 1):
            logits = self.pool(self.classifier(x)).flatten(1)
        else:
            logits = self.classifier(self.pool(x)).flatten(1)
        return logits if self.prior is None else logits + self.prior

    def cam(self, x: torch.Tensor) -> torch.Tensor:
        """Raw class maps [B, num_classes, h, w] (no ReLU)."""
        return self.classifier(x)
