"""ESOL's deformable samplers (spec ``esol_ppl_excel.md`` A.2-A.4).

A sampler is a residual deformable convolution on the final feature map ``F`` [B, C, h, w]:
``F' = clip(F + BN(deform_conv(F, O)), range of F)``, where the offsets ``O`` [B, 2*k*k, h, w] come
from a convolution of ``F`` (the offset branch) and are bounded. The offset branch and the
normalisation's scale are zero-initialised, so a fresh sampler returns ``F`` unchanged: each
stage starts from the model it is added to.

The inverse supervision of the expansion stage (A.3) is a gradient scaling on the offsets: the
forward is unchanged, the backward multiplies the offsets' gradient by ``-inverse_weight``. The
offset branch reads ``F`` detached, so the reversed gradient reaches the offset branch only; the
backbone (through ``F``) and the sampler kernel get the ordinary gradient of the classification
loss, which they descend. The gradient reversal realisation is a reconstruction (the paper
only says "an inverse supervision signal that maximizes image-level classification loss").
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torchvision.ops import deform_conv2d


class _ScaleGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, factor: float) -> torch.Tensor:
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad * ctx.factor, None


def scale_gradient(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Identity in the forward; multiplies the gradient by ``factor`` in the backward (a negative
    factor is a gradient-reversal layer). Any shape."""
    if factor == 1.0:
        return x
    return _ScaleGradient.apply(x, factor)


def bound_offsets(raw: torch.Tensor, max_offset: float) -> torch.Tensor:
    """``max_offset * tanh(raw / max_offset)``: offsets [B, 2*k*k, h, w] in feature cells, bounded
    by ``max_offset`` and equal to ``raw`` near 0 (zero stays zero). A smooth bound rather than a
    hard clamp, so an offset pushed to the bound still gets a gradient back."""
    return max_offset * torch.tanh(raw / max_offset)


def clip_features(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Clip ``x`` [B, C, h, w] per image and channel to the value range of ``reference`` (same shape),
    taken without gradient.

    The feature clip of the samplers (a reconstruction): the minimising side of the expansion
    game cannot answer the adversarial offsets by amplifying features beyond what the backbone
    produces, so the sampler can only spread responses, not create stronger peaks. On
    non-negative maps (ResNet stages end in a ReLU) it also keeps the output non-negative."""
    ref = reference.detach()
    return torch.maximum(torch.minimum(x, ref.amax(dim=(2, 3), keepdim=True)), ref.amin(dim=(2, 3), keepdim=True))


class DeformableSampler(nn.Module):
    """Residual 3x3 deformable convolution (DCNv1, no modulation) with its offset branch.

    Args:
        channels: C of the map it samples (and returns).
        kernel_size: k of the deformable kernel and of the offset branch.
        max_offset: bound of every offset, in feature cells.
        feature_clip: clip the output to the input's per-channel range (:func:`clip_features`).
        branch_scale_init: initial BatchNorm scale of the residual branch (0: the sampler starts as
            the identity; 1: the usual BatchNorm initialisation).
    """

    def __init__(self, channels: int, kernel_size: int = 3, max_offset: float = 3.0, feature_clip: bool = True,
                 branch_scale_init: float = 0.0):
        super().__init__()
        self.kernel_size, self.max_offset, self.feature_clip = kernel_size, max_offset, feature_clip
        self.offset = nn.Conv2d(channels, 2 * kernel_size * kernel_size, kernel_size, padding=kernel_size // 2)
        nn.init.zeros_(self.offset.weight)
        nn.init.zeros_(self.offset.bias)
        self.weight = nn.Parameter(torch.empty(channels, channels, kernel_size, kernel_size))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        self.norm = nn.BatchNorm2d(channels)
        nn.init.constant_(self.norm.weight, branch_scale_init)

    def offsets(self, x: torch.Tensor) -> torch.Tensor:
        """Bounded offsets [B, 2*k*k, h, w] ((dy, dx) pairs, torchvision order) from ``x`` detached."""
        return bound_offsets(self.offset(x.detach()), self.max_offset)

    def sample(self, x: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """Deformable convolution of ``x`` [B, C, h, w] at ``offsets`` -> [B, C, h, w]."""
        return deform_conv2d(x, offsets, self.weight, padding=self.kernel_size // 2)

    def forward(self, x: torch.Tensor, offset_gradient: float = 1.0) -> torch.Tensor:
        """[B, C, h, w] -> [B, C, h, w]; ``offset_gradient`` scales the offsets' gradient."""
        out = x + self.norm(self.sample(x, scale_gradient(self.offsets(x), offset_gradient)))
        return clip_features(out, x) if self.feature_clip else out


class ExpansionShrinkage(nn.Module):
    """The final-map module ESOL puts in ``Classifier.feature_map``: the expansion sampler, then (from
    the shrinkage stage on) the shrinkage sampler.

    ``stage`` ("expansion" or "shrinkage") is set by the refiner. In the expansion stage, while
    training, the offsets of the expansion sampler get ``-inverse_weight`` times their gradient.
    """

    def __init__(self, channels: int, kernel_size: int = 3, max_offset: float = 3.0, feature_clip: bool = True,
                 inverse_weight: float = 1.0, branch_scale_init: float = 0.0):
        super().__init__()
        self.expansion = DeformableSampler(channels, kernel_size, max_offset, feature_clip, branch_scale_init)
        self.shrinkage = DeformableSampler(channels, kernel_size, max_offset, feature_clip, branch_scale_init)
        self.inverse_weight = inverse_weight
        self.stage = "expansion"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone map [B, C, h, w] -> refined map [B, C, h, w]."""
        if self.stage == "expansion":
            factor = -self.inverse_weight if self.training else 1.0
            return self.expansion(x, offset_gradient=factor)
        return self.shrinkage(self.expansion(x))

