"""What a CAM method is: a name and a function producing raw maps for every requested class slot."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from wsss.cams.core import forward_with_activations, slot_gradients

# (A [B, C, h, w], G [B, C, h, w]) -> raw map [B, h, w] before ReLU
GradientWeighting = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# (model, images [B,3,H,W], targets [B,K], layer, **options) -> raw maps [B, K, h, w]
RawCamFn = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class CamMethod:
    """A registered method: ``raw`` computes unnormalised maps [B, K, h, w] for all slots at once.

    A method that brings its own model (e.g. frozen CLIP towers, no trained classifier) sets
    ``build_model`` (run config -> model, with ``mean``/``std`` attributes) and ``model_key`` (run
    config -> a string that changes whenever that model or what it reads changes); ``wsss cams`` then
    uses that model and fingerprints ``model_key`` instead of the classifier checkpoint."""

    name: str
    raw: RawCamFn
    uses_gradients: bool
    build_model: Callable[[Any], nn.Module] | None = None
    model_key: Callable[[Any], str] | None = None


def spatial(activation: torch.Tensor, model: nn.Module, grid: tuple[int, int] | None = None) -> torch.Tensor:
    """Token sequences [B, P+N, D] -> maps [B, D, h, w] (prefix tokens dropped, row-major grid);
    maps pass unchanged. ``grid`` defaults to a square grid."""
    if activation.dim() == 4:
        return activation
    if activation.dim() != 3:
        raise ValueError(f"target layer output must be [B, C, h, w] or [B, N, D]; got {tuple(activation.shape)}")
    prefix = int(getattr(model, "num_prefix_tokens", 1))
    tokens = activation[:, prefix:]
    n = tokens.shape[1]
    h, w = grid if grid is not None else (int(round(n ** 0.5)),) * 2
    if h * w != n:
        raise ValueError(f"{n} patch tokens do not form a {h}x{w} grid; pass grid=(h, w)")
    return tokens.transpose(1, 2).reshape(tokens.shape[0], -1, h, w)


def gradient_method(name: str, weighting: GradientWeighting) -> CamMethod:
    """A gradient method from its weighting alone: one forward, one partial backward per slot."""

    def raw(model, images, targets, layer, grid=None, **_):
        logits, (activation,) = forward_with_activations(model, images, [layer], need_grad=True)
        a = spatial(activation.detach(), model, grid)
        maps = []
        for k in range(targets.shape[1]):
            (g,) = slot_gradients(logits, [activation], targets[:, k])
            maps.append(weighting(a, spatial(g, model, grid)))
        return torch.stack(maps, dim=1)

    return CamMethod(name, raw, uses_gradients=True)
