"""Eigen-CAM (Muhammad & Yeasin, arXiv 2008.00299): projection on the first principal component.

Class-agnostic (every slot gets the same map) and gradient-free. The SVD leaves the sign of the
component arbitrary; as a project choice (spec 2.8) the map is flipped so that it correlates
non-negatively with the channel-mean activation, falling back to pytorch-grad-cam's
``|min| > |max|`` rule when that correlation is exactly 0.
"""

from __future__ import annotations

import torch

from wsss.cams.base import CamMethod, spatial
from wsss.cams.core import forward_with_activations


def first_component_projection(a: torch.Tensor) -> torch.Tensor:
    """A [B, C, h, w] -> projection [B, h, w] of the centred positions on the first right singular
    vector (NaNs zeroed first), before any sign correction."""
    b, c, h, w = a.shape
    x = torch.nan_to_num(a).reshape(b, c, h * w).transpose(1, 2).double()
    x = x - x.mean(dim=1, keepdim=True)
    _, _, vh = torch.linalg.svd(x, full_matrices=False)
    return (x @ vh[:, 0, :, None])[..., 0].reshape(b, h, w).to(a.dtype)


def sign_corrected(projection: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """Flip each map so that corr(map, mean_k A_k) >= 0 (ties: flip if |min| > |max|)."""
    m = projection.flatten(1).double()
    ref = a.mean(1).flatten(1).double()
    corr = ((m - m.mean(1, keepdim=True)) * (ref - ref.mean(1, keepdim=True))).sum(1)
    tie_flip = m.amin(1).abs() > m.amax(1).abs()
    flip = torch.where(corr == 0, tie_flip, corr < 0)
    return torch.where(flip[:, None, None], -projection, projection)


def raw_eigencam(model, images, targets, layer, grid=None, **_):
    _, (activation,) = forward_with_activations(model, images, [layer], need_grad=False)
    a = spatial(activation, model, grid)
    m = sign_corrected(first_component_projection(a), a)
    return m[:, None].expand(-1, targets.shape[1], -1, -1).contiguous()


EIGENCAM = CamMethod("eigencam", raw_eigencam, uses_gradients=False)
