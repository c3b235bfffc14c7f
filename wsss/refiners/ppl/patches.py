"""Patch split and stitch of feature maps and token grids (spec ``esol_ppl_excel.md`` B.2).

Patches are folded into the batch dimension, patch-major within each image: patch ``(r, c)`` of
image ``b`` is row ``b * g * g + r * g + c`` of the tiled batch. :func:`tile` and :func:`merge` are
exact inverses (pure reshapes and permutes, no arithmetic).

Padding rule (sizes not divisible by the grid): the map is padded with zeros at the bottom and the
right up to the smallest multiple of ``g * stride``, where ``stride`` is the downsampling of the
blocks the patches run through, so every patch has the same size and each patch's output cells see
exactly the input cells the unsplit path's do; the stitched result is cropped back to the unsplit
output size. A 1 x 1 grid is never padded, so it is the unsplit computation exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def padded_size(size: int, grid: int, stride: int = 1) -> int:
    """Side after the padding rule: ``size`` for a 1 x 1 grid, else the smallest multiple of
    ``grid * stride`` that is >= ``size``."""
    if grid == 1:
        return size
    unit = grid * stride
    return -(-size // unit) * unit


def pad_for_grid(x: torch.Tensor, grid: int, stride: int = 1) -> torch.Tensor:
    """Zero-pad ``x`` [B, C, h, w] at the bottom/right to [B, C, h', w'] (:func:`padded_size`)."""
    h, w = x.shape[-2:]
    ph, pw = padded_size(h, grid, stride) - h, padded_size(w, grid, stride) - w
    return F.pad(x, (0, pw, 0, ph)) if ph or pw else x


def tile(x: torch.Tensor, grid: int) -> torch.Tensor:
    """[B, C, g*hp, g*wp] -> [B*g*g, C, hp, wp], patch-major within each image."""
    b, c, h, w = x.shape
    if h % grid or w % grid:
        raise ValueError(f"tile: a {h}x{w} map does not split into a {grid}x{grid} grid; pad it first")
    hp, wp = h // grid, w // grid
    return x.reshape(b, c, grid, hp, grid, wp).permute(0, 2, 4, 1, 3, 5).reshape(b * grid * grid, c, hp, wp)


def merge(patches: torch.Tensor, grid: int) -> torch.Tensor:
    """Inverse of :func:`tile`: [B*g*g, C, hp, wp] -> [B, C, g*hp, g*wp]."""
    n, c, hp, wp = patches.shape
    b = n // (grid * grid)
    return patches.reshape(b, grid, grid, c, hp, wp).permute(0, 3, 1, 4, 2, 5).reshape(b, c, grid * hp, grid * wp)


def tile_tokens(prefix: torch.Tensor, grid_map: torch.Tensor, grid: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Token sequences of the patches of a ViT token grid, each led by a copy of the prefix tokens.

    Args:
        prefix: class/register tokens [B, P, D].
        grid_map: patch tokens as a map [B, D, h, w].
        grid: g.

    Returns:
        ``(tokens, key_mask)``: tokens [B*g*g, P + hp*wp, D] (grid padded by the padding rule with
        stride 1) and an additive attention mask [B*g*g, 1, 1, P + hp*wp] (0 for real tokens,
        -inf for padding, so padding never acts as a key), or None when nothing was padded.
    """
    b, d, h, w = grid_map.shape
    padded = pad_for_grid(grid_map, grid)
    patches = tile(padded, grid).flatten(2).transpose(1, 2)
    n_patch = grid * grid
    tokens = torch.cat([prefix.repeat_interleave(n_patch, dim=0), patches], dim=1)
    if padded.shape[-2:] == (h, w):
        return tokens, None
    valid = pad_for_grid(grid_map.new_ones(1, 1, h, w), grid)
    valid = tile(valid, grid).flatten(1)
    valid = torch.cat([valid.new_ones(n_patch, prefix.shape[1]), valid], dim=1).repeat(b, 1)
    mask = torch.zeros_like(valid).masked_fill(valid == 0, float("-inf"))
    return tokens, mask[:, None, None, :]


def merge_tokens(tokens: torch.Tensor, grid: int, num_prefix: int, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`tile_tokens` after the blocks ran on each patch.

    Args:
        tokens: [B*g*g, P + hp*wp, D].
        grid: g.
        num_prefix: P.
        size: (h, w) of the unpadded grid.

    Returns:
        ``(prefix, grid_map)``: the prefix tokens averaged over the patches of each image [B, P, D]
        and the stitched, cropped patch tokens [B, D, h, w].
    """
    n, _, d = tokens.shape
    b = n // (grid * grid)
    h, w = size
    hp, wp = padded_size(h, grid) // grid, padded_size(w, grid) // grid
    prefix = tokens[:, :num_prefix].reshape(b, grid * grid, num_prefix, d).mean(dim=1)
    patches = tokens[:, num_prefix:].transpose(1, 2).reshape(n, d, hp, wp)
    return prefix, merge(patches, grid)[..., :h, :w]
