"""Segmentation network: a backbone and a head from ``SEG_HEADS``."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from wsss.errors import ConfigError
from wsss.models import build_backbone
from wsss.models.network import BackboneNetwork
from wsss.models.seg_heads import SEG_HEADS


class Segmenter(BackboneNetwork):
    """Logits [B, C, H/stride, W/stride] (``forward``) or at input size (``forward_full``).

    ``num_classes`` includes background. ViT backbones feed the head their per-block maps, CNNs their
    stages; ``final`` replaces the last entry so a ViT's last level is the normed one.
    """

    checkpoint_kind = "segmenter"

    def __init__(self, backbone: str, num_classes: int, head: str = "aspp", pretrained: bool | str = False,
                 head_kwargs: dict[str, Any] | None = None, backbone_kwargs: dict[str, Any] | None = None):
        super().__init__()
        if head not in SEG_HEADS:
            raise ConfigError(f"segmenter.head: unknown head {head!r}; choose one of {sorted(SEG_HEADS)}")
        self.config = dict(backbone=backbone, num_classes=num_classes, head=head, head_kwargs=dict(head_kwargs or {}),
                           backbone_kwargs=dict(backbone_kwargs or {}))
        self.backbone = build_backbone(backbone, pretrained=pretrained, **(backbone_kwargs or {}))
        self.head = SEG_HEADS[head](list(self.backbone.out_channels), num_classes, **(head_kwargs or {}))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.backbone(x)
        return self.head([*out.features[:-1], out.final])

    def forward_full(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(self(x), size=x.shape[-2:], mode="bilinear", align_corners=False)

    def new_parameters(self) -> list[nn.Parameter]:
        return list(self.head.parameters())
