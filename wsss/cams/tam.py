"""TAM's rank Gaussian filter (Li et al., arXiv 2506.23270; xmed-lab/TAM), as a denoiser for any map.

Per ``k x k`` window (reflect padding): sort the values, take their mean ``mu`` and population std
``s``; output 0 if ``mu <= 0``, else the Gaussian-weighted sum over rank offsets with
``sigma = s / mu``: small sigma behaves like a median, large like a mean. A constant positive window
(sigma 0, NaN in the reference code) returns its value (spec 2.12, project choice).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def rank_gaussian_filter(maps: torch.Tensor, kernel_size: int = 3) -> torch.Tensor:
    """Denoise maps [..., h, w] (applied to ReLU'd maps before normalisation)."""
    shape = maps.shape
    x = maps.reshape(-1, 1, shape[-2], shape[-1])
    pad = kernel_size // 2
    windows = F.unfold(F.pad(x, (pad, pad, pad, pad), mode="reflect"), kernel_size)  # [N, k*k, h*w]
    ordered, _ = windows.sort(dim=1)
    mu = ordered.mean(dim=1, keepdim=True)
    s = ordered.std(dim=1, unbiased=False, keepdim=True)
    sigma = s / mu.clamp(min=torch.finfo(maps.dtype).tiny)
    half = kernel_size * kernel_size // 2
    r = torch.arange(-half, half + 1, dtype=maps.dtype, device=maps.device)[None, :, None]
    kernel = torch.exp(-(r ** 2) / (2 * sigma.clamp(min=1e-12) ** 2))
    kernel = kernel / kernel.sum(dim=1, keepdim=True)
    out = (kernel * ordered).sum(dim=1, keepdim=True)
    out = torch.where(sigma == 0, mu, out)
    out = torch.where(mu <= 0, torch.zeros_like(out), out)
    return out.reshape(shape)
