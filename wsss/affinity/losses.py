"""IRN's affinity loss (official code jiwoon-ahn/irn ``step/train_irn.py``, ``net/resnet50_irn.py``)."""

from __future__ import annotations

import torch

from wsss.affinity.paths import PairGrid

EPS = 1e-5


def reduce_labels(labels: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour label map on ``grid`` [B, h, w] from labels [B, H, W], sampling pixel centres
    (``floor((i + 0.5) * H / h)``) as IRN's PIL rescale of the crop labels by 1/4 does."""
    h, w = grid
    rows = ((torch.arange(h, device=labels.device) + 0.5) * labels.shape[-2] / h).long().clamp_(max=labels.shape[-2] - 1)
    cols = ((torch.arange(w, device=labels.device) + 0.5) * labels.shape[-1] / w).long().clamp_(max=labels.shape[-1] - 1)
    return labels[:, rows][:, :, cols]


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (values * mask).sum() / (mask.sum() + EPS)


def affinity_loss(boundary: torch.Tensor, labels: torch.Tensor, radius: int = 10,
                  ignore_index: int = 255) -> dict[str, torch.Tensor]:
    """IRN's loss terms of boundary probabilities [B, h, w] against the relation labels of a label map
    [B, h, w] (0 background, classes, ``ignore_index`` unknown) on the same grid.

    With ``a`` the pair affinities (:meth:`PairGrid.affinities`): ``bg_pos`` and ``fg_pos`` are the
    means of ``-log(a + 1e-5)`` over the positive background and foreground pairs, ``neg`` the mean of
    ``-log(1 + 1e-5 - a)`` over the negative pairs, and ``total = ((bg_pos + fg_pos) / 2 + neg) / 2``
    (IRN's total without its displacement terms).
    """
    grid = PairGrid(radius, *boundary.shape[-2:])
    if min(grid.src_shape) <= 0:
        raise ValueError(f"affinity_loss: a {tuple(boundary.shape[-2:])} grid is too small for radius {radius}; "
                         "use a larger affinity.crop_size or a smaller affinity.radius")
    aff = grid.affinities(boundary)
    bg_pos, fg_pos, neg = grid.relation_labels(labels, ignore_index)
    terms = {
        "bg_pos": _masked_mean(-torch.log(aff + EPS), bg_pos),
        "fg_pos": _masked_mean(-torch.log(aff + EPS), fg_pos),
        "neg": _masked_mean(-torch.log(1.0 + EPS - aff), neg),
    }
    terms["total"] = ((terms["bg_pos"] + terms["fg_pos"]) / 2 + terms["neg"]) / 2
    return terms
