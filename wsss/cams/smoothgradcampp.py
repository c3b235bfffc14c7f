"""Smooth Grad-CAM++ (Omeiza et al., arXiv 1908.01224): Grad-CAM++ with gradient powers averaged
over ``n_samples`` noisy copies ``x + N(0, sigma^2)`` of the (normalised) input.

Defaults n = 4, sigma = 0.3 are torchcam's (the paper's own values are unverified). As a project
choice (spec 2.4) the numerator is ``mean(g^2)``, the weight uses ``ReLU(mean(g))`` and ``S_k``
comes from the clean forward. The noise comes from a generator seeded with ``seed``.
"""

from __future__ import annotations

import torch

from wsss.cams.base import CamMethod, spatial
from wsss.cams.core import forward_with_activations, slot_gradients
from wsss.cams.gradcampp import EPS


def smooth_weights(s: torch.Tensor, g1: torch.Tensor, g2: torch.Tensor, g3: torch.Tensor) -> torch.Tensor:
    """Channel weights [B, C, 1, 1] from the clean activation sums S and the noisy-gradient means."""
    alpha = g2 / (2 * g2 + s * g3 + EPS)
    alpha = torch.where(g2 != 0, alpha, torch.zeros_like(alpha))
    return (g1.clamp(min=0) * alpha).sum(dim=(2, 3), keepdim=True)


def raw_smoothgradcampp(model, images, targets, layer, n_samples: int = 4, sigma: float = 0.3, seed: int = 0,
                        grid=None, **_):
    _, (clean,) = forward_with_activations(model, images, [layer], need_grad=False)
    a = spatial(clean, model, grid)
    s = a.sum(dim=(2, 3), keepdim=True)
    gen = torch.Generator(device=images.device).manual_seed(seed)
    k_slots = targets.shape[1]
    sums = [[torch.zeros_like(a) for _ in range(3)] for _ in range(k_slots)]
    for _ in range(n_samples):
        noisy = images + sigma * torch.randn(images.shape, generator=gen, device=images.device, dtype=images.dtype)
        logits, (activation,) = forward_with_activations(model, noisy, [layer], need_grad=True)
        for k in range(k_slots):
            (g,) = slot_gradients(logits, [activation], targets[:, k])
            g = spatial(g, model, grid)
            sums[k][0] += g
            sums[k][1] += g * g
            sums[k][2] += g * g * g
    maps = []
    for k in range(k_slots):
        g1, g2, g3 = (t / n_samples for t in sums[k])
        maps.append((smooth_weights(s, g1, g2, g3) * a).sum(1))
    return torch.stack(maps, dim=1)


SMOOTHGRADCAMPP = CamMethod("smoothgradcampp", raw_smoothgradcampp, uses_gradients=True)
