"""Multi-label classification metrics (mean average precision, macro F1)."""

from __future__ import annotations

import torch


def average_precision(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-class AP [C] of ``scores`` [N, C] against binary ``targets`` [N, C] (NaN for classes
    without positives); AP = mean precision at the rank of each positive (ties broken by order)."""
    order = scores.argsort(dim=0, descending=True)
    hits = targets.gather(0, order).float()
    cum_hits = hits.cumsum(0)
    ranks = torch.arange(1, scores.shape[0] + 1, dtype=torch.float32, device=scores.device)[:, None]
    precision_at_hits = (cum_hits / ranks) * hits
    n_pos = hits.sum(0)
    ap = precision_at_hits.sum(0) / n_pos.clamp(min=1)
    return torch.where(n_pos > 0, ap, torch.full_like(ap, float("nan")))


def mean_average_precision(scores: torch.Tensor, targets: torch.Tensor) -> float:
    ap = average_precision(scores, targets)
    return float(ap[~ap.isnan()].mean()) if (~ap.isnan()).any() else float("nan")


def macro_f1(probs: torch.Tensor, targets: torch.Tensor, threshold: float = 0.5) -> float:
    """Macro F1 over classes with at least one positive or predicted positive."""
    pred = probs >= threshold
    tgt = targets > 0.5
    tp = (pred & tgt).sum(0).float()
    fp = (pred & ~tgt).sum(0).float()
    fn = (~pred & tgt).sum(0).float()
    denom = 2 * tp + fp + fn
    valid = denom > 0
    return float((2 * tp[valid] / denom[valid]).mean()) if valid.any() else float("nan")
