"""DOEI maths as small pure functions (spec ``toco_usage_doei.md`` C.2; a reconstruction, no code
was released). Nothing here has parameters; confidences, candidate masks and affinities are
computed by the callers under ``no_grad``.

Shapes: ``B`` images, ``N`` patch tokens, ``P`` prefix (class) tokens, ``C`` classes, ``D`` channels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def depth_strengths(base: float, n_blocks: int) -> list[float]:
    """Strength per wrapped block, growing linearly with depth: ``base * k / n`` for k = 1..n
    (the deepest wrapped block gets ``base``). Reconstruction [proj-default]."""
    return [base * (k + 1) / n_blocks for k in range(n_blocks)]


def normalise_maps(maps: torch.Tensor) -> torch.Tensor:
    """ReLU, then per image and class ``(M - min) / (max - min + 1e-5)``: [B, C, N] -> [B, C, N] in [0, 1]."""
    maps = maps.clamp(min=0)
    low = maps.amin(dim=-1, keepdim=True)
    return (maps - low) / ((maps - low).amax(dim=-1, keepdim=True) + 1e-5)


def token_confidence(maps: torch.Tensor, present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Confidence ``s_i = max_c over present classes of M_c,i`` and its class ``y_i`` (spec C.2.1).

    Args:
        maps: normalised class maps [B, C, N].
        present: bool [B, C], at least one True per image.

    Returns:
        (s [B, N], y [B, N] long).
    """
    masked = maps.masked_fill(~present[:, :, None], -1.0)
    s, y = masked.max(dim=1)
    return s.clamp(min=0), y


def predicted_presence(logits: torch.Tensor) -> torch.Tensor:
    """Classes with a positive logit (probability > 0.5); the top class where none is: [B, C] bool."""
    present = logits > 0
    top = F.one_hot(logits.argmax(dim=1), logits.shape[1]).bool()
    return torch.where(present.any(dim=1, keepdim=True), present, top)


def candidate_masks(scores: torch.Tensor, high: float, low: float) -> tuple[torch.Tensor, torch.Tensor]:
    """High set ``scores >= high`` and low set ``scores <= low`` (spec C.2.2), same shape as ``scores``."""
    return scores >= high, scores <= low


def patch_rgb(image: torch.Tensor, patch_size: int, mean, std) -> torch.Tensor:
    """Mean RGB in [0, 1] of each patch of a normalised image [B, 3, H, W] -> [B, N, 3] (row-major)."""
    m = torch.as_tensor(mean, dtype=image.dtype, device=image.device)[None, :, None, None]
    s = torch.as_tensor(std, dtype=image.dtype, device=image.device)[None, :, None, None]
    rgb = F.avg_pool2d(image * s + m, patch_size)
    return rgb.flatten(2).transpose(1, 2)


def rgb_similarity(rgb: torch.Tensor, sigma: float) -> torch.Tensor:
    """``R_ij = exp(-||rgb_i - rgb_j||^2 / sigma^2)``: [B, N, 3] -> [B, N, N]."""
    return torch.exp(-torch.cdist(rgb, rgb).pow(2) / sigma ** 2)


def cosine_matrix(embeddings: torch.Tensor) -> torch.Tensor:
    """Pairwise cosine similarity [B, N, D] -> [B, N, N]."""
    e = F.normalize(embeddings, dim=-1, eps=1e-8)
    return e @ e.transpose(1, 2)


def hybrid_affinity(attention: torch.Tensor, embeddings: torch.Tensor, rgb: torch.Tensor, mode: str = "sum",
                    weights: tuple[float, float, float] = (1 / 3, 1 / 3, 1 / 3), sigma: float = 0.1,
                    temperature: float = 1.0) -> torch.Tensor:
    """Hybrid feature alignment matrix ``W`` [B, N, N], rows summing to 1 (spec C.2.3).

    Args:
        attention: head-averaged patch-to-patch self-attention A [B, N, N].
        embeddings: patch embeddings [B, N, D] (E = their cosine similarity).
        rgb: patch mean colours [B, N, 3] (R = Gaussian colour similarity, ``sigma``).
        mode: ``"sum"``: ``softmax_row((a1 R + a2 E + a3 A) / T)`` (spec C.2.3); ``"rgb_weighted"``:
            ``softmax_row((a2 R*E + a3 A) / T)``, the paper figure's "embedding similarity weighted by
            RGB, added to the attention" (``a1`` unused). Both reconstructions.
        weights: (a1, a2, a3).
        temperature: softmax temperature T.
    """
    a1, a2, a3 = weights
    r = rgb_similarity(rgb, sigma)
    e = cosine_matrix(embeddings)
    if mode == "sum":
        logits = a1 * r + a2 * e + a3 * attention
    elif mode == "rgb_weighted":
        logits = a2 * r * e + a3 * attention
    else:
        raise ValueError(f"hybrid mode must be 'sum' or 'rgb_weighted'; got {mode!r}")
    return torch.softmax(logits / temperature, dim=-1)


def patch_decoupling(embeddings: torch.Tensor, affinity: torch.Tensor, labels: torch.Tensor,
                     high: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
    """Patch-wise progressive decoupling direction ``d`` [B, N, D] (spec C.2.4):
    ``d_i = sum_{j in H, y_j = y_i} W_ij e_j - sum_{j in L} W_ij e_j``.

    Args:
        embeddings: e [B, N, D] (carries gradient).
        affinity: W [B, N, N] (detached).
        labels: y [B, N]; high, low: bool masks [B, N].
    """
    same = labels[:, :, None] == labels[:, None, :]
    signed = (same & high[:, None, :]).to(affinity.dtype) - low[:, None, :].to(affinity.dtype)
    return (affinity * signed) @ embeddings


def decouple_rows(rows: torch.Tensor, high: torch.Tensor, low: torch.Tensor, strength: float) -> torch.Tensor:
    """Class-wise progressive decoupling of attention rows (spec C.2.5): multiply the weights on
    high-set columns by ``1 + strength`` and on low-set columns by ``1 - strength``, renormalise each
    row to its original sum. Parameter-free; keeps the order of any two columns whose factor is the
    same, or where the larger weight gets the larger factor.

    Args:
        rows: non-negative weights [..., M] (e.g. the class-to-token attention of each head).
        high, low: bool masks broadcastable to ``rows`` (columns outside both keep factor 1).
        strength: gamma in [0, 1).
    """
    factor = 1.0 + strength * (high.to(rows.dtype) - low.to(rows.dtype))
    scaled = rows * factor
    return scaled * (rows.sum(-1, keepdim=True) / scaled.sum(-1, keepdim=True).clamp(min=1e-12))
