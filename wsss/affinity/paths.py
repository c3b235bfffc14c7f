"""IRN's pixel pairs (Ahn et al., CVPR 2019; official code jiwoon-ahn/irn ``misc/indexing.py``): every
pixel is paired with the pixels within ``radius`` in one half-plane, and the affinity of a pair is
``1 - max`` of the boundary map along the straight path between them.

A pair direction is an offset ``(dy, dx)`` with ``dy > 0`` (or ``dy == 0`` and ``dx > 0``) and
``dy^2 + dx^2 < radius^2``; its path is every grid point of the offset's bounding box within distance 1
of the line through both pixels (both ends included).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch


def pair_directions(radius: int) -> list[tuple[int, int]]:
    """The half-plane offsets ``(dy, dx)`` of the pairs, row by row."""
    out = [(0, dx) for dx in range(1, radius)]
    out += [(dy, dx) for dy in range(1, radius) for dx in range(-radius + 1, radius) if dy * dy + dx * dx < radius ** 2]
    return out


def path_offsets(direction: tuple[int, int]) -> list[tuple[int, int]]:
    """Grid points ``(y, x)`` (relative to the source pixel) on the path to ``direction``."""
    dy, dx = direction
    length_sq = dy * dy + dx * dx
    return [(y, x) for y in range(min(0, dy), max(0, dy) + 1) for x in range(min(0, dx), max(0, dx) + 1)
            if (dy * x - dx * y) ** 2 < length_sq]


@dataclass(frozen=True)
class PairGrid:
    """Source pixels of the training pairs on an (h, w) grid, as in IRN's ``PathIndex``: the rows
    ``[0, h - r + 1)`` and columns ``[r - 1, w - r + 1)`` (``r`` = radius), so that every pair's other
    pixel lies on the grid. Pair tensors are [B, D, n_src] with D = ``len(self.directions)``."""

    radius: int
    height: int
    width: int

    @cached_property
    def directions(self) -> list[tuple[int, int]]:
        return pair_directions(self.radius)

    @property
    def margin(self) -> int:
        return self.radius - 1

    @property
    def src_shape(self) -> tuple[int, int]:
        return self.height - self.margin, self.width - 2 * self.margin

    def shifted(self, x: torch.Tensor, offset: tuple[int, int]) -> torch.Tensor:
        """``x[..., y + oy, x + ox]`` for every source pixel: [..., h, w] -> [..., n_src]."""
        (sh, sw), (oy, ox) = self.src_shape, offset
        col = self.margin + ox
        return x[..., oy : oy + sh, col : col + sw].flatten(-2)

    def affinities(self, boundary: torch.Tensor) -> torch.Tensor:
        """``1 - max`` of ``boundary`` [B, h, w] (in [0, 1]) along every pair's path: [B, D, n_src]."""
        return torch.stack([1 - torch.stack([self.shifted(boundary, o) for o in path_offsets(d)]).amax(dim=0)
                            for d in self.directions], dim=1)

    def relation_labels(self, labels: torch.Tensor, ignore_index: int = 255
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """IRN's inter-pixel relation labels of a label map [B, h, w] (0 = background, ``ignore_index``
        = unknown): ``(bg_pos, fg_pos, neg)``, each float [B, D, n_src]. A pair is positive when both
        pixels carry the same known label (background or the same class), negative when their known
        labels differ; pairs touching an unknown pixel are in none."""
        src = self.shifted(labels, (0, 0))[:, None]
        dst = torch.stack([self.shifted(labels, d) for d in self.directions], dim=1)
        valid = (src != ignore_index) & (dst != ignore_index)
        equal = src == dst
        pos = equal & valid
        return (pos & (src == 0)).float(), (pos & (src > 0)).float(), (~equal & valid).float()
