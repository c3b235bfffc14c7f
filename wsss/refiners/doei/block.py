"""One DOEI-wrapped ViT block: the block runs unchanged, then its output is corrected by the
patch-wise branch (all hosts) and, on a host with one class token per class, the class-wise branch
(spec C.2 steps 3-6; a reconstruction).

The correction is a residual injection ``y <- y + lambda * delta`` with no new parameters:

* patch tokens: ``delta = beta_k * d`` with ``d`` from :func:`~wsss.refiners.doei.ops.patch_decoupling`;
* class tokens (one per class): ``delta = block'(x)_c - block(x)_c``, where ``block'`` recomputes the
  class-token rows with the class-to-patch attention decoupled by ``gamma_k``
  (:func:`~wsss.refiners.doei.ops.decouple_rows`) and the attention sub-layer, residual and MLP of
  the same block; patch rows of the attention are unchanged, so patch tokens need no recomputation.

Confidences, candidate sets and the hybrid matrix are computed under ``no_grad``; gradients reach the
backbone through the embeddings ``e_j`` in ``d`` and through the attention in the class-wise rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from wsss.refiners.doei.ops import (
    candidate_masks,
    decouple_rows,
    hybrid_affinity,
    normalise_maps,
    patch_decoupling,
    predicted_presence,
    token_confidence,
)


@dataclass
class DOEISettings:
    """Operator settings shared by every wrapped block (see :class:`~wsss.refiners.doei.DOEIRefiner`)."""

    high: float
    low: float
    residual_scale: float
    hybrid: str
    hybrid_weights: tuple[float, float, float]
    rgb_sigma: float
    hybrid_temperature: float
    class_wise: bool
    patch_wise: bool


@dataclass
class HostView:
    """What the operator reads from the host classifier: its head (class maps and image logits on a
    token map), the norm the head's input gets, and how many prefix tokens the backbone has."""

    head: nn.Module
    norm: nn.Module
    num_prefix: int
    num_classes: int

    @property
    def per_class_tokens(self) -> bool:
        return self.num_prefix == self.num_classes


def split_attention(attn: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax attention [B, heads, T, T] and values [B, heads, T, head_dim] of a timm ``Attention``
    on its (normalised) input ``x`` [B, T, D]."""
    b, t, _ = x.shape
    qkv = attn.qkv(x).reshape(b, t, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k = attn.q_norm(qkv[0]), attn.k_norm(qkv[1])
    return ((q * attn.scale) @ k.transpose(-2, -1)).softmax(dim=-1), qkv[2]


def class_maps_and_logits(host: HostView, patch_tokens: torch.Tensor, grid: tuple[int, int]
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """The host head on a block's patch tokens [B, N, D]: class maps [B, C, N] and logits [B, C]."""
    b, n, d = patch_tokens.shape
    fmap = host.norm(patch_tokens).transpose(1, 2).reshape(b, d, *grid)
    return host.head.cam(fmap).flatten(2), host.head(fmap)


def doei_block_output(block: nn.Module, x: torch.Tensor, y: torch.Tensor, host: HostView, rgb: torch.Tensor,
                      grid: tuple[int, int], settings: DOEISettings, beta: float, gamma: float
                      ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Corrected output [B, P + N, D] of ``block`` (input ``x``, plain output ``y``) and, when the
    class-wise branch ran, the effective attention [B, heads, T, T] (else None).

    ``rgb`` [B, N, 3] are patch mean colours, ``beta`` / ``gamma`` this block's patch-wise and
    class-wise strengths."""
    p, lam = host.num_prefix, settings.residual_scale
    class_wise = settings.class_wise and host.per_class_tokens and gamma > 0
    # only the class-wise rows carry gradient through the attention; otherwise skip its graph
    with torch.set_grad_enabled(class_wise and torch.is_grad_enabled()):
        attention, values = split_attention(block.attn, block.norm1(x))
    with torch.no_grad():
        patches = y[:, p:].detach()
        cams, logits = class_maps_and_logits(host, patches, grid)
        if host.per_class_tokens:
            # MCTformer's own localisation: class-to-patch attention times the ReLU'd patch CAM
            cams = attention.mean(1)[:, :p, p:] * cams.clamp(min=0)
        maps = normalise_maps(cams)
        present = predicted_presence(logits)
        scores, labels = token_confidence(maps, present)
        high, low = candidate_masks(scores, settings.high, settings.low)
    out_prefix, out_patches = y[:, :p], y[:, p:]
    if settings.patch_wise and beta > 0:
        with torch.no_grad():
            affinity = hybrid_affinity(attention.mean(1)[:, p:, p:], patches, rgb, settings.hybrid,
                                       settings.hybrid_weights, settings.rgb_sigma, settings.hybrid_temperature)
        out_patches = out_patches + lam * beta * patch_decoupling(y[:, p:], affinity, labels, high, low)
    effective = None
    if class_wise:
        with torch.no_grad():
            class_high, class_low = candidate_masks(maps, settings.high, settings.low)
            class_high &= present[:, :, None]
            class_low &= present[:, :, None]
            pad = (p, 0)
            class_high = F.pad(class_high, pad, value=False)[:, None]
            class_low = F.pad(class_low, pad, value=False)[:, None]
        rows = decouple_rows(attention[:, :, :p], class_high, class_low, gamma)
        mixed = attention[:, :, :p] + lam * (rows - attention[:, :, :p])
        out_prefix = y[:, :p] + lam * (_class_rows(block, x[:, :p], rows, values) - y[:, :p])
        effective = torch.cat([mixed, attention[:, :, p:]], dim=2)
    return torch.cat([out_prefix, out_patches], dim=1), effective


def _class_rows(block: nn.Module, x_prefix: torch.Tensor, rows: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """The block's output for the prefix tokens [B, P, D] when their attention rows are ``rows``
    [B, heads, P, T] (timm ``Block``: attention sub-layer, then MLP, each with layer scale)."""
    attn = block.attn
    mixed = (rows @ values).transpose(1, 2).reshape(x_prefix.shape[0], x_prefix.shape[1], -1)
    z = x_prefix + block.ls1(attn.proj(attn.norm(mixed)))
    return z + block.ls2(block.mlp(block.norm2(z)))
