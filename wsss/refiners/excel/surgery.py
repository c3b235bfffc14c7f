"""ExCEL's training-free maths: the calibrated attention of Static Visual Calibration (spec C.3) and the
patch-text CAM with the redundancy subtraction and the class-token prior (spec C.4)."""

from __future__ import annotations

import torch

SURGERY_EPS = 1e-5


def calibrated_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``(softmax(q q^T s) + softmax(k k^T s) + softmax(v v^T s)) / 3`` with ``s = d^-0.5``.

    q, k, v: [B, heads, N, d] -> [B, heads, N, N], every row sums to 1 (sum over heads to apply it)."""
    scale = q.shape[-1] ** -0.5
    return sum((x @ x.transpose(-2, -1) * scale).softmax(dim=-1) for x in (q, k, v)) / 3


def class_prior(cls_token: torch.Tensor, text: torch.Tensor, temperature: float = 2.0) -> torch.Tensor:
    """Per-text weight ``p / mean(p)`` with ``p = softmax(temperature * cls T^T)``.

    cls_token: [B, E]; text: [N_t, E] -> [B, N_t] (mean 1 per image)."""
    p = (temperature * cls_token @ text.t()).softmax(dim=-1)
    return p / p.mean(dim=-1, keepdim=True)


def surgery_scores(tokens: torch.Tensor, text: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Closed form of the redundancy-subtracted similarity ``S`` (spec C.4 steps 2-3).

    ``E[n, t] = tokens[n] * text[t] * w[t]`` (element-wise, [E]); ``S[n, t] = sum_c (E - mean_t E)[c]``,
    which equals ``G[n, t] - mean_t G[n, t]`` with ``G = w * tokens text^T``: no [N, N_t, E] tensor.

    tokens: [B, N, E]; text: [N_t, E]; weights: [B, N_t] or None (all 1) -> [B, N, N_t]; every token's
    row sums to 0."""
    g = tokens @ text.t()
    if weights is not None:
        g = g * weights[:, None, :]
    return g - g.mean(dim=-1, keepdim=True)


def surgery_scores_elementwise(tokens: torch.Tensor, text: torch.Tensor,
                               weights: torch.Tensor | None = None) -> torch.Tensor:
    """The same ``S`` computed literally through ``E`` [B, N, N_t, E] (the official form; for checks)."""
    e = tokens[:, :, None, :] * text[None, None]
    if weights is not None:
        e = e * weights[:, None, :, None]
    return (e - e.mean(dim=2, keepdim=True)).sum(dim=-1)


def token_minmax(scores: torch.Tensor, eps: float = SURGERY_EPS) -> torch.Tensor:
    """Min-max over tokens per image and text: [B, N, N_t] -> [0, 1]; ``eps`` keeps a constant column
    finite (it becomes 0; the official code has no eps)."""
    low = scores.amin(dim=1, keepdim=True)
    return (scores - low) / (scores.amax(dim=1, keepdim=True) - low + eps)


def surgery_cam(tokens: torch.Tensor, text: torch.Tensor, num_fg: int, use_prior: bool = True,
                prior_temperature: float = 2.0) -> torch.Tensor:
    """Patch-text CAMs [B, hw, num_fg] in [0, 1] of projected tokens [B, 1+hw, E] (CLS first) and texts
    [N_t, E] (foreground classes first, then background texts that act only through the subtraction)."""
    weights = class_prior(tokens[:, 0], text, prior_temperature) if use_prior else None
    scores = token_minmax(surgery_scores(tokens, text, weights))
    return scores[:, 1:, :num_fg]
