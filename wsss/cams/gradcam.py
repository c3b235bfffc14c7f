"""Grad-CAM (Selvaraju et al., arXiv 1610.02391): channel weights = spatial mean of the gradient."""

from __future__ import annotations

import torch

from wsss.cams.base import gradient_method


def gradcam_map(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """A, G [B, C, h, w] -> sum_k mean_ij(G_k) A_k, [B, h, w]."""
    return (g.mean(dim=(2, 3), keepdim=True) * a).sum(1)


GRADCAM = gradient_method("gradcam", gradcam_map)
