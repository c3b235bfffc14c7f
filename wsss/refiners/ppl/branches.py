"""Patch branches: the backbone blocks above a split point run on every patch at once.

A branch takes the map the backbone produced at ``BackboneOutput.features[split]``, cuts it into a
``g x g`` grid (:mod:`wsss.refiners.ppl.patches`), runs the backbone's own upper blocks (shared
weights) on all patches folded into the batch, and stitches the result into a map of the size of
the unsplit ``final``.

* CNN (timm ``features_only`` ResNets and EfficientNets): the upper blocks are the backbone's
  top-level units after the one that emits ``features[split]``, through the one that emits
  ``features[-1]``. Zero padding at patch borders inside each conv is what isolates the patches.
* ViT: the upper blocks are ``blocks[split + 1:]`` then the final norm. Every patch sequence is led
  by a copy of the prefix (class/register) tokens of block ``split``; the patches' prefix outputs
  are averaged. Position embeddings are not re-applied: they were added to every token before
  block 0, so each token keeps the position of its place in the whole image.

BatchNorm layers above a split, in training mode, normalise the patch batch with its own
statistics and also update their running statistics from it (the patches hold the same pixels as
the unsplit map, plus the zero padding of the padding rule).
"""

from __future__ import annotations

import torch
from torch import nn

from wsss.errors import ConfigError
from wsss.refiners.ppl.patches import merge, merge_tokens, pad_for_grid, tile, tile_tokens


def cnn_units(net: nn.Module) -> list[tuple[str, nn.Module]]:
    """The sequential top-level units of a timm ``features_only`` CNN, in forward order, with the
    dotted names its ``feature_info`` uses."""
    if hasattr(net, "conv_stem") and isinstance(getattr(net, "blocks", None), nn.Sequential):
        return [("conv_stem", net.conv_stem), ("bn1", net.bn1)] + [(f"blocks.{j}", b) for j, b in enumerate(net.blocks)]
    return list(net.named_children())


def cnn_upper_blocks(backbone: nn.Module, split: int) -> tuple[list[nn.Module], int]:
    """``(modules, stride)``: the units that turn ``features[split]`` into ``features[-1]`` and
    their total downsampling."""
    info = backbone.net.feature_info
    names = [n.replace(".", "_") for n in info.module_name()]
    units = cnn_units(backbone.net)
    index = {name.replace(".", "_"): i for i, (name, _) in enumerate(units)}
    missing = [n for n in names if n not in index]
    if missing:
        raise ConfigError(f"ppl: cannot find the stage modules {missing} in backbone {backbone.name!r}")
    first, last = index[names[split]] + 1, index[names[-1]]
    reductions = info.reduction()
    return [m for _, m in units[first:last + 1]], reductions[-1] // reductions[split]


def cnn_patch_forward(blocks: list[nn.Module], x: torch.Tensor, grid: int, stride: int,
                      out_size: tuple[int, int]) -> torch.Tensor:
    """Run ``blocks`` on each patch of ``x``.

    Args:
        blocks: the upper units, applied in order.
        x: the map at the split [B, C, h, w].
        grid: g.
        stride: downsampling of ``blocks`` (padding rule).
        out_size: (h2, w2) of the unsplit output, the size the stitched map is cropped to.

    Returns:
        [B, C2, h2, w2].
    """
    y = tile(pad_for_grid(x, grid, stride), grid)
    for block in blocks:
        y = block(y)
    return merge(y, grid)[..., :out_size[0], :out_size[1]]


def vit_patch_forward(backbone: nn.Module, tokens: torch.Tensor, size: tuple[int, int], split: int,
                      grid: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ViT blocks ``split + 1 ..`` and the final norm on each patch of the token grid.

    Args:
        backbone: a :class:`wsss.models.vit.TimmViT`.
        tokens: raw output of block ``split`` [B, P + h*w, D] (prefix first).
        size: (h, w) of the token grid.
        split: index of the block the split follows.
        grid: g.

    Returns:
        ``(prefix, final)``: prefix tokens after the norm, averaged over patches [B, P, D], and the
        stitched patch tokens after the norm as a map [B, D, h, w].
    """
    p = backbone.num_prefix_tokens
    grid_map = backbone.to_map(tokens[:, p:], *size)
    x, mask = tile_tokens(tokens[:, :p], grid_map, grid)
    for block in backbone.net.blocks[split + 1:]:
        x = block(x, attn_mask=None if mask is None else mask.to(x.dtype))
    return merge_tokens(backbone.net.norm(x), grid, p, size)


class PatchBranches:
    """The patch branches of one backbone, callable on a forward's :class:`BackboneOutput`.

    Holds no parameters (the blocks are the backbone's own); ``split`` indexes
    ``BackboneOutput.features`` and must leave at least one block above it.
    """

    def __init__(self, backbone: nn.Module):
        self.backbone = backbone
        self.is_vit = bool(getattr(backbone, "is_vit", False))
        self.n_blocks = len(backbone.out_channels)
        self._cnn: dict[int, tuple[list[nn.Module], int]] = {}

    def normalise(self, split: int) -> int:
        """``split`` as a non-negative index; raises a ConfigError when no block is left above it."""
        index = split + self.n_blocks if split < 0 else split
        if not 0 <= index < self.n_blocks - 1:
            raise ConfigError(f"ppl: split_blocks entry {split} must leave a block above it; the backbone has "
                              f"{self.n_blocks} {'blocks' if self.is_vit else 'stages'} (valid 0..{self.n_blocks - 2})")
        return index

    def __call__(self, out, split: int, grid: int, detach: bool = False) -> torch.Tensor:
        """The stitched final map [B, D, h, w] of the branch splitting after ``features[split]``
        into a ``grid x grid`` grid; ``detach`` stops its gradient into the blocks below the split."""
        split = self.normalise(split)
        size = tuple(out.final.shape[-2:])
        if self.is_vit:
            tokens = out.tokens[split]
            return vit_patch_forward(self.backbone, tokens.detach() if detach else tokens, size, split, grid)[1]
        if split not in self._cnn:
            self._cnn[split] = cnn_upper_blocks(self.backbone, split)
        blocks, stride = self._cnn[split]
        x = out.features[split]
        return cnn_patch_forward(blocks, x.detach() if detach else x, grid, stride, size)
