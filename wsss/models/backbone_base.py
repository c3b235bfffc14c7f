"""The one interface CNN and ViT backbones share (see ``shared/design/ARCHITECTURE.md``).

CAM methods, heads and refiners read a :class:`BackboneOutput` and never need to know which
architecture produced it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class BackboneOutput:
    """What a backbone returns for an input ``x`` [B, 3, H, W].

    Attributes:
        features: per-stage (CNN) or per-block (ViT) maps, each [B, C_i, h_i, w_i]; for a ViT the raw
            block outputs' patch tokens reshaped row-major to ``(H/p, W/p)``.
        final: the map classifier heads read, [B, D, h, w]: the last stage (CNN) or the last block's
            patch tokens after the final norm (ViT).
        prefix_tokens: ViT only: prefix (class/register) tokens of the last block after the final
            norm, [B, P, D]; ``None`` for CNNs.
        tokens: ViT only: per-block raw token sequences [B, P + N, D] (prefix first).
        attentions: ViT only, and only when requested: per-block attention probabilities
            [B, heads, P + N, P + N].
        num_prefix_tokens: P (0 for CNNs).
    """

    features: list[torch.Tensor]
    final: torch.Tensor
    prefix_tokens: torch.Tensor | None = None
    tokens: list[torch.Tensor] | None = None
    attentions: list[torch.Tensor] | None = None
    num_prefix_tokens: int = 0
    extras: dict = field(default_factory=dict)


class Backbone(nn.Module):
    """Base class: subclasses set the attributes below and implement :meth:`forward`.

    Attributes:
        out_channels: channels of each entry of ``BackboneOutput.features``.
        final_channels: channels of ``BackboneOutput.final``.
        stride: total output stride of ``final`` (16 for the dilated ResNets and ViT/16).
        is_vit: True for token models.
        mean, std: input normalisation on [0, 1] images the weights expect.
    """

    out_channels: list[int]
    final_channels: int
    stride: int
    is_vit: bool = False
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    def forward(self, x: torch.Tensor, return_attn: bool = False) -> BackboneOutput:  # pragma: no cover
        raise NotImplementedError
