"""IRN's class-boundary network (Ahn et al., CVPR 2019; official code jiwoon-ahn/irn
``net/resnet50_irn.py``) on any registered backbone.

The backbone is frozen (eval mode, no gradient), as in IRN; each of its feature levels goes through
a 1x1 convolution to 32 channels, GroupNorm(4), bilinear upsampling to the stride-4 grid and ReLU, and
a 1x1 convolution of their concatenation gives the boundary logits. IRN reads five ResNet levels
(the stem's 64 channels too); wsss backbones expose their last four stages, so the CNNs give four
levels and a ViT its per-block maps at stride 16. IRN's displacement branch (for instance masks) is
not part of this network: with the backbone frozen it shares no parameter with the boundary branch
and does not change the semantic pseudo masks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from wsss.models import build_backbone
from wsss.models.network import BackboneNetwork

STRIDE = 4
EDGE_CHANNELS = 32


def boundary_grid(size: tuple[int, int]) -> tuple[int, int]:
    """The stride-4 grid of an input of ``size`` (IRN's ``get_strided_size``: ``(s - 1) // 4 + 1``)."""
    return tuple((s - 1) // STRIDE + 1 for s in size)


class AffinityNet(BackboneNetwork):
    """Boundary logits [B, 1, h, w] on the stride-4 grid of the input [B, 3, H, W]."""

    checkpoint_kind = "affinity network"

    def __init__(self, backbone: str, pretrained: bool | str = False, backbone_kwargs: dict | None = None,
                 levels: int = 4):
        super().__init__()
        self.config = dict(backbone=backbone, backbone_kwargs=dict(backbone_kwargs or {}), levels=levels)
        self.backbone = build_backbone(backbone, pretrained=pretrained, **(backbone_kwargs or {}))
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        channels = list(self.backbone.out_channels)[-levels:]
        self.levels = levels
        self.edge_layers = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, EDGE_CHANNELS, 1, bias=False), nn.GroupNorm(4, EDGE_CHANNELS)) for c in channels)
        self.edge_out = nn.Conv2d(EDGE_CHANNELS * len(channels), 1, 1, bias=True)

    def train(self, mode: bool = True) -> AffinityNet:
        super().train(mode)
        self.backbone.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grid = boundary_grid(x.shape[-2:])
        with torch.no_grad():
            features = self.backbone(x).features[-self.levels:]
        maps = [F.relu(F.interpolate(layer(f), size=grid, mode="bilinear", align_corners=False))
                for layer, f in zip(self.edge_layers, features)]
        return self.edge_out(torch.cat(maps, dim=1))

    def boundary(self, image: torch.Tensor) -> torch.Tensor:
        """Boundary probabilities [h, w] of one image [1, 3, H, W]: the sigmoid of the mean of the logits
        of the image and of its mirror (flipped back), as IRN's ``EdgeDisplacement``."""
        logits = self(torch.cat([image, image.flip(-1)], dim=0))
        return torch.sigmoid(logits[0, 0] / 2 + logits[1, 0].flip(-1) / 2)

    def new_parameters(self) -> list[nn.Parameter]:
        return [*self.edge_layers.parameters(), *self.edge_out.parameters()]
