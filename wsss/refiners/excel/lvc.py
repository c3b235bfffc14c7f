"""Learnable Visual Calibration (ExCEL spec C.6, C.7): the adapter over every layer's patch tokens, its
segmentation decoder, the dynamic shift of the calibrated attention, the predicted affinity ``Aseg``
and its loss. Only these parts train; CLIP stays frozen."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from wsss.data.palette import IGNORE_INDEX
from wsss.refiners.toco.labels import label_to_aff_mask


class LvcAdapter(nn.Module):
    """SegFormer-style fusion of ``n_layers`` patch-token maps: per layer a 2-layer MLP
    ``width -> dim -> dim``, concatenated, 1x1 conv to ``dim``, Dropout2d.

    ``forward(layers)``: list of [B, 1+hw, width] (CLS first) and the grid -> ``Z`` [B, dim, h, w]."""

    def __init__(self, width: int, n_layers: int, dim: int = 256, dropout: float = 0.1):
        super().__init__()
        self.mlps = nn.ModuleList(nn.Sequential(nn.Linear(width, dim), nn.GELU(), nn.Linear(dim, dim))
                                  for _ in range(n_layers))
        self.fuse = nn.Conv2d(n_layers * dim, dim, kernel_size=1)
        self.dropout = nn.Dropout2d(dropout)

    def forward(self, layers: list[torch.Tensor], grid: tuple[int, int]) -> torch.Tensor:
        h, w = grid
        maps = [mlp(x[:, 1:]).transpose(1, 2).reshape(x.shape[0], -1, h, w) for mlp, x in zip(self.mlps, layers)]
        return self.dropout(self.fuse(torch.cat(maps, dim=1)))


class LvcDecoder(nn.Module):
    """A ``depth``-layer transformer over the ``Z`` tokens (width ``dim``, ``heads`` heads), then a linear
    classifier: ``Z`` [B, dim, h, w] -> logits [B, num_classes + 1, h, w]. [UNVERIFIED] reconstruction of
    the official decoder's layout (spec C.6 gives only depth, width and heads)."""

    def __init__(self, num_classes: int, dim: int = 256, depth: int = 3, heads: int = 8):
        super().__init__()
        layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=4 * dim, batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.classifier = nn.Linear(dim, num_classes + 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        b, c, h, w = z.shape
        tokens = self.blocks(z.flatten(2).transpose(1, 2))
        return self.classifier(tokens).transpose(1, 2).reshape(b, -1, h, w)


def feature_similarity(z: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of the detached adapter features: [B, C, h, w] -> [B, hw, hw]."""
    zn = F.normalize(z.detach().flatten(2), dim=1)
    return zn.transpose(1, 2) @ zn


def dynamic_shift(z: torch.Tensor, scale: float = 3.0) -> torch.Tensor:
    """The shift added to the calibrated attention: ``R = (sim - mean(sim)) * scale``, negative entries
    removed (-inf), softmax over keys. [B, C, h, w] -> [B, hw, hw]; a row with no positive entry is 0."""
    sim = feature_similarity(z)
    r = (sim - sim.mean(dim=(1, 2), keepdim=True)) * scale
    r = r.masked_fill(r < 0, float("-inf"))
    return torch.nan_to_num(r.softmax(dim=-1), nan=0.0)


def predicted_affinity(z: torch.Tensor, scale: float = 3.0) -> torch.Tensor:
    """``Aseg = sigmoid(scale * (Zn^T Zn - mean))`` [B, hw, hw] (gradients reach ``z``)."""
    zn = F.normalize(z.flatten(2), dim=1)
    sim = zn.transpose(1, 2) @ zn
    return torch.sigmoid(scale * (sim - sim.mean(dim=(1, 2), keepdim=True)))


def lvc_affinity(aseg: torch.Tensor, attentions: list[torch.Tensor]) -> torch.Tensor:
    """The refinement affinity during LVC: the CLIP attention maps (patch part, [B, hw, hw] each) whose
    summed difference ``sum(Aseg - A_l)`` is at most the mean over layers, averaged, times ``Aseg``."""
    stacked = torch.stack([a[:, 1:, 1:] for a in attentions])
    diff = (aseg[None] - stacked).sum(dim=(2, 3))
    keep = (diff <= diff.mean(dim=0, keepdim=True)).to(stacked.dtype)
    mean = (stacked * keep[..., None, None]).sum(0) / keep.sum(0).clamp(min=1)[:, None, None]
    return mean * aseg


def radius_mask(grid: tuple[int, int], radius: int, device=None) -> torch.Tensor:
    """Bool [hw, hw]: pairs within ``radius`` on the grid in both row and column (Chebyshev distance)."""
    h, w = grid
    ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    return ((ys[:, None] - ys[None]).abs() <= radius) & ((xs[:, None] - xs[None]).abs() <= radius)


def affinity_target(labels: torch.Tensor, grid: tuple[int, int], radius: int = 8) -> torch.Tensor:
    """Pair target [B, hw, hw] of pseudo labels [B, H, W] nearest-downsampled to ``grid``: 1 same label,
    0 different, 255 outside the radius window or where a label is ignored (ToCo's pair mask)."""
    small = F.interpolate(labels[:, None].float(), size=grid, mode="nearest")[:, 0].long()
    target = label_to_aff_mask(small)
    return target.masked_fill(~radius_mask(grid, radius, labels.device)[None], IGNORE_INDEX)


def affinity_loss(aseg: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``0.5 * sum_{Y=1}(1 - Aseg)/(n_pos + 1) + 0.5 * sum_{Y=0} Aseg/(n_neg + 1)`` (spec C.7)."""
    pos, neg = (target == 1).to(aseg.dtype), (target == 0).to(aseg.dtype)
    return 0.5 * ((1 - aseg) * pos).sum() / (pos.sum() + 1) + 0.5 * (aseg * neg).sum() / (neg.sum() + 1)
