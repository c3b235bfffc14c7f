"""CAMs from several layers, picked or fused per image and class.

DoNuSeg (Wang et al., arXiv 2406.16427) selects the best block per image dynamically; its criterion
is not published in the abstract (unverified), so the project's choice (spec 2.13) for ``"select"``
scores each layer's map by the class logit of the input masked by the map, ``y_c(x * M)``. The other
fusions follow the libraries: ``"mean"`` (pytorch-grad-cam), ``"max_tanh"`` (LayerCAM/torchcam:
``tanh(2 M)`` then element-wise max) and ``"prod"`` (torchcam's RefineCAM-style product, min-max).
"""

from __future__ import annotations

import torch

from wsss.cams.core import minmax

FUSIONS = ("select", "mean", "max_tanh", "prod")


def fuse_layers(maps: torch.Tensor, fusion: str, scores: torch.Tensor | None = None) -> torch.Tensor:
    """Fuse per-layer maps [L, B, K, H, W] in [0, 1] into [B, K, H, W].

    ``select`` needs ``scores`` [L, B, K] and keeps, per image and class, the highest-scoring layer.
    """
    if fusion == "mean":
        return minmax(maps.mean(0), 1e-7)
    if fusion == "max_tanh":
        return torch.tanh(2.0 * maps).amax(0)
    if fusion == "prod":
        return minmax(minmax(maps, 1e-7).prod(0), 1e-7)
    if fusion == "select":
        if scores is None:
            raise ValueError("fusion 'select' needs per-layer scores")
        best = scores.argmax(0)  # [B, K]
        index = best[None, ..., None, None].expand(1, *maps.shape[1:])
        return maps.gather(0, index)[0]
    raise ValueError(f"fusion must be one of {FUSIONS}; got {fusion!r}")


@torch.no_grad()
def masked_logit_scores(model, images: torch.Tensor, maps: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Scores [L, B, K]: logit of ``targets[b, k]`` for the input kept only where layer ``l``'s map is."""
    scores = []
    for layer_maps in maps:
        per_slot = []
        for k in range(targets.shape[1]):
            logits = model(images * layer_maps[:, k:k + 1])
            per_slot.append(logits.gather(1, targets[:, k:k + 1].clamp(min=0))[:, 0])
        scores.append(torch.stack(per_slot, dim=1))
    return torch.stack(scores)


def layer_select_cams(model, images: torch.Tensor, targets: torch.Tensor, layers, method: str = "gradcam",
                      fusion: str = "select", **options) -> torch.Tensor:
    """[B, K, H, W] in [0, 1] fused from ``method``'s max-normalised maps at each of ``layers``."""
    from wsss.cams import compute_cams
    from wsss.cams.core import inference_state

    maps = torch.stack([compute_cams(model, images, targets, layer, method=method, normalize="max", **options)
                        for layer in layers])
    scores = None
    if fusion == "select":
        with inference_state(model):
            scores = masked_logit_scores(model, images, maps, targets)
    return fuse_layers(maps, fusion, scores) * (targets >= 0)[..., None, None].to(maps.dtype)
