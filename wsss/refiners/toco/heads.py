"""Modules ToCo adds to the classifier (spec ``toco_usage_doei.md`` A.1): the DINO-style CTC
projection head, its EMA update and the LargeFOV segmentation decoder."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm


class ProjectionHead(nn.Module):
    """MLP ``D -> hidden -> hidden -> bottleneck`` (GELU), L2 normalisation, then a bias-free
    weight-normalised linear ``bottleneck -> out_dim`` whose norm ``g`` is frozen at 1.

    Official sizes: hidden 2048, bottleneck 256, out_dim 1024 (configurable so tests stay cheap).
    Input [N, D] -> output [N, out_dim].
    """

    def __init__(self, in_dim: int, hidden_dim: int = 2048, bottleneck_dim: int = 256, out_dim: int = 1024):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, hidden_dim),
            nn.GELU(),
            nn.Linear(hidden_dim, bottleneck_dim),
        )
        for layer in self.mlp:
            if isinstance(layer, nn.Linear):
                nn.init.trunc_normal_(layer.weight, std=0.02)
                nn.init.zeros_(layer.bias)
        self.last_layer = weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        magnitude = self.last_layer.parametrizations.weight.original0
        with torch.no_grad():
            magnitude.fill_(1.0)
        magnitude.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.normalize(self.mlp(x), dim=-1, p=2)
        return self.last_layer(x)


class LargeFOV(nn.Module):
    """DeepLab LargeFOV head: two bias-free 3x3 convs (dilation ``dilation``, ``channels``) with
    ReLU, then a bias-free 1x1 conv to ``num_classes``. [B, D, h, w] -> [B, num_classes, h, w]."""

    def __init__(self, in_channels: int, num_classes: int, channels: int = 512, dilation: int = 5):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, channels, 3, padding=dilation, dilation=dilation, bias=False),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation, bias=False),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, num_classes, 1, bias=False),
        )
        for layer in self.body:
            if isinstance(layer, nn.Conv2d):
                nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """``theta_t <- momentum * theta_t + (1 - momentum) * theta_s`` for every parameter (matched by
    name), in place; buffers are copied.

    Computed as ``theta_t + (1 - momentum) * (theta_s - theta_t)`` so that a teacher equal to its
    student stays bit-identical (``0.9 * x + 0.1 * x`` can be one ulp off ``x``).
    """
    student_params = dict(student.named_parameters())
    for name, param in teacher.named_parameters():
        param.lerp_(student_params[name].detach(), 1.0 - momentum)
    student_buffers = dict(student.named_buffers())
    for name, buf in teacher.named_buffers():
        buf.copy_(student_buffers[name])
