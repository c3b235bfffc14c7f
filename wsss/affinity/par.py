"""Pixel-adaptive refinement (PAR, from the AFA/ToCo code): score maps smoothed with local colour
affinities, training-free. One implementation serves ToCo's decoder labels and the ``pseudo.par``
pseudo masks of any CAM folder."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

PAR_DILATIONS = (1, 2, 4, 8, 12, 24)


def dilated_neighbours(x: torch.Tensor, dilations: Sequence[int]) -> torch.Tensor:
    """The 8 neighbours of every pixel at each dilation, border-replicated.

    [B, C, H, W] -> [B, C, 8 * len(dilations), H, W]."""
    h, w = x.shape[-2:]
    out = []
    for d in dilations:
        padded = F.pad(x, [d] * 4, mode="replicate")
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                if dy == 0 and dx == 0:
                    continue
                out.append(padded[..., d + dy * d : d + dy * d + h, d + dx * d : d + dx * d + w])
    return torch.stack(out, dim=2)


def par_affinity(images: torch.Tensor, dilations: Sequence[int] = PAR_DILATIONS, w_colour: float = 0.3,
                 w_pos: float = 0.01) -> torch.Tensor:
    """Weights [B, 1, 8 * len(dilations), H, W] of every pixel's neighbours (see :func:`par_refine`);
    they sum to ``1 + w_pos`` at every pixel."""
    neighbours = dilated_neighbours(images, dilations)
    diff = (neighbours - images.unsqueeze(2)).abs()
    colour = -(diff / (neighbours.std(dim=2, keepdim=True) + 1e-8) / w_colour) ** 2
    colour = colour.mean(dim=1, keepdim=True).softmax(dim=2)
    root2 = math.sqrt(2.0)
    unit = torch.tensor([root2, 1.0, root2, 1.0, 1.0, root2, 1.0, root2], dtype=images.dtype)
    dist = torch.cat([unit * d for d in dilations]).to(images.device)
    position = (-(dist / (dist.std() + 1e-8) / w_colour) ** 2).softmax(dim=0)
    return colour + w_pos * position[None, None, :, None, None]


def par_refine(
    images: torch.Tensor,
    masks: torch.Tensor,
    dilations: Sequence[int] = PAR_DILATIONS,
    num_iter: int = 10,
    w_colour: float = 0.3,
    w_pos: float = 0.01,
    normalise: bool = False,
) -> torch.Tensor:
    """PAR of score maps with local colour affinities.

    For every pixel the 8 neighbours at each dilation get the weight
    ``softmax_k(-mean_c(|I_k - I| / std_k(I_k) / w_colour)^2) + w_pos * softmax_k(-(dist_k /
    std_k(dist) / w_colour)^2)``, and ``num_iter`` times each mask becomes the weighted sum of
    its neighbours' values.

    The weights sum to ``1 + w_pos`` (as in the official code, ``normalise=False``), so every
    step scales all maps by that factor: argmax and ratios are unaffected. ``normalise=True``
    divides the weights by it, so that each step is a convex combination: a constant map stays
    constant and scores keep their scale (needed when the refined scores are compared with a fixed
    threshold).

    Args:
        images: [B, 3, H, W] images (any scale: only colour ratios matter).
        masks: [B, K, h, w] scores, resized (bilinear, aligned corners) to (H, W) first.

    Returns:
        [B, K, H, W] refined scores.
    """
    h, w = images.shape[-2:]
    masks = F.interpolate(masks, size=(h, w), mode="bilinear", align_corners=True)
    affinity = par_affinity(images, dilations, w_colour, w_pos)
    if normalise:
        affinity = affinity / (1.0 + w_pos)
    for _ in range(num_iter):
        masks = (dilated_neighbours(masks, dilations) * affinity).sum(dim=2)
    return masks


def par_cams(image: np.ndarray, cams: np.ndarray, num_iter: int = 10) -> np.ndarray:
    """PAR-refined CAMs float32 [K, H, W] of ``cams`` [K, H, W] on ``image`` uint8 [H, W, 3] (the
    normalised form: a background threshold keeps its meaning)."""
    if cams.shape[0] == 0:
        return np.asarray(cams, np.float32)
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float()
    with torch.no_grad():
        refined = par_refine(x, torch.from_numpy(np.asarray(cams, np.float32))[None], num_iter=num_iter,
                             normalise=True)
    return refined[0].numpy()
