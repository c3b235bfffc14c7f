"""ESOL's shrinkage-stage maths (spec ``esol_ppl_excel.md`` A.3 step 5, A.4): the expanded
foreground mask and the area loss. Both are reconstructions; the paper gives neither formula."""

from __future__ import annotations

import torch


def max_normalise(cams: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """``ReLU(cams)`` divided by its maximum per image and class: [B, K, h, w] -> [B, K, h, w] in [0, 1].
    The maximum keeps its gradient, so the result depends on the shape of a map, not its scale."""
    positive = cams.clamp(min=0)
    return positive / (positive.amax(dim=(2, 3), keepdim=True) + eps)


def expanded_mask(cams: torch.Tensor, labels: torch.Tensor, threshold: float = 0.3) -> torch.Tensor:
    """Foreground of the expanded CAM: positions where any present class reaches ``threshold`` of its
    maximum. ``cams`` [B, K, h, w] raw, ``labels`` [B, K] in {0, 1} -> float mask [B, 1, h, w]."""
    present = labels[:, :, None, None] > 0
    hit = (max_normalise(cams) >= threshold) & present
    return hit.any(dim=1, keepdim=True).to(cams.dtype)


def area_loss(cams: torch.Tensor, labels: torch.Tensor, region: torch.Tensor | None = None) -> torch.Tensor:
    """Mean activated fraction of ``region`` over the present classes (a reconstruction of the area
    loss that removes false-positive background).

    Per image ``b`` and present class ``k``: ``sum(A[b,k] * R[b]) / sum(R[b])`` with ``A`` the
    max-normalised CAM (:func:`max_normalise`) and ``R`` the region (all positions when None). The
    classification loss keeps the class's evidence; this term shrinks whatever else is active.

    Args:
        cams: raw CAMs [B, K, h, w] of the shrinkage model.
        labels: image labels [B, K] in {0, 1}.
        region: float mask [B, 1, h, w] (e.g. :func:`expanded_mask`) or None.

    Returns:
        scalar; 0 (with a gradient path) when no class is present.
    """
    normalised = max_normalise(cams)
    if region is None:
        region = torch.ones_like(cams[:, :1])
    fraction = (normalised * region).sum(dim=(2, 3)) / region.sum(dim=(2, 3)).clamp(min=1.0)
    present = (labels > 0).to(cams.dtype)
    return (fraction * present).sum() / present.sum().clamp(min=1.0)
