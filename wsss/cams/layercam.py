"""LayerCAM (Jiang et al., IEEE TIP 2021): pixel-wise weights ``ReLU(G) * A``."""

from __future__ import annotations

import torch

from wsss.cams.base import gradient_method


def layercam_map(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    return (g.clamp(min=0) * a).sum(1)


LAYERCAM = gradient_method("layercam", layercam_map)
