"""HiResCAM (Draelos & Carin, arXiv 2011.08891): ``sum_k G_k * A_k`` without pooling the gradient."""

from __future__ import annotations

import torch

from wsss.cams.base import gradient_method


def hirescam_map(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    return (g * a).sum(1)


HIRESCAM = gradient_method("hirescam", hirescam_map)
