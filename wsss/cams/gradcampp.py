"""Grad-CAM++ (Chattopadhay et al., arXiv 1710.11063), closed form of eq. 19 as pytorch-grad-cam."""

from __future__ import annotations

import torch

from wsss.cams.base import gradient_method

EPS = 1e-6


def gradcampp_alpha(g: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """``alpha = g^2 / (2 g^2 + S g^3 + eps)``, 0 where ``g == 0``: g [B, C, h, w], S [B, C, 1, 1].

    ``torch.where`` keeps an inf from a vanishing denominator (possible only where g < 0, whose
    weight ReLU(g) is 0 anyway) from turning into NaN.
    """
    g2 = g * g
    alpha = g2 / (2 * g2 + s * g2 * g + EPS)
    return torch.where(g != 0, alpha, torch.zeros_like(alpha))


def gradcampp_weights(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Channel weights [B, C, 1, 1]: ``sum_ij ReLU(g) * alpha`` (a sum, not a mean); S from ``a``."""
    alpha = gradcampp_alpha(g, a.sum(dim=(2, 3), keepdim=True))
    return (g.clamp(min=0) * alpha).sum(dim=(2, 3), keepdim=True)


def gradcampp_map(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    return (gradcampp_weights(a, g) * a).sum(1)


GRADCAMPP = gradient_method("gradcampp", gradcampp_map)
