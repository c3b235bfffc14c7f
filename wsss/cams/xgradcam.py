"""XGrad-CAM (Fu et al., arXiv 2008.02312): ``alpha_k = sum G A / (S_k + eps)``.

The eps (1e-7, pytorch-grad-cam's) takes the sign of ``S_k`` (spec 2.5, a project choice) so a
negative activation sum, common after GELU, is not pushed through zero.
"""

from __future__ import annotations

import torch

from wsss.cams.base import gradient_method

EPS = 1e-7


def xgradcam_map(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    s = a.sum(dim=(2, 3), keepdim=True)
    signed_eps = torch.where(s >= 0, torch.full_like(s, EPS), torch.full_like(s, -EPS))
    alpha = (g * a / (s + signed_eps)).sum(dim=(2, 3), keepdim=True)
    return (alpha * a).sum(1)


XGRADCAM = gradient_method("xgradcam", xgradcam_map)
