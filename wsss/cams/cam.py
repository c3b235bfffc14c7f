"""CAM (Zhou et al., arXiv 1512.04150): classifier weights times the target-layer map, no backward.

Also the ViT *token CAM* (spec 2.9): the same product on patch tokens reshaped to a map. It is an exact
CAM when the classifier is linear on per-token features and pooling commutes with it (our
``Classifier`` with GAP, or GMP up to the monotone pooling); for heads reading the class token, or a
LayerNorm after pooling (timm ViT with ``global_pool='avg'``), use Grad-CAM on the tokens instead.
"""

from __future__ import annotations

import torch

from wsss.cams.base import CamMethod, spatial
from wsss.cams.core import forward_with_activations


def classifier_weight(model) -> torch.Tensor:
    """The head weight [num_classes, C] of ``model.get_classifier()`` (Linear or 1x1 conv; bias ignored)."""
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    weight = getattr(head, "weight", None)
    if weight is None:
        raise ValueError("method 'cam' needs model.get_classifier() returning a Linear or 1x1 Conv2d head")
    if weight.dim() == 4 and tuple(weight.shape[-2:]) != (1, 1):
        raise ValueError(f"method 'cam' needs a Linear or 1x1 Conv2d head; this one is "
                         f"{tuple(weight.shape[-2:])} (MCTformer: use the mctformer methods or gradcam)")
    return weight.reshape(weight.shape[0], -1)


def class_maps(weight: torch.Tensor, activation: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``M[b, k] = sum_c weight[targets[b, k], c] * A[b, c]``: [B, K, h, w] from A [B, C, h, w]."""
    w = weight[targets.clamp(min=0)]
    return torch.einsum("bkc,bchw->bkhw", w, activation)


def raw_cam(model, images, targets, layer, grid=None, **_):
    _, (activation,) = forward_with_activations(model, images, [layer], need_grad=False)
    return class_maps(classifier_weight(model), spatial(activation, model, grid), targets)


CAM = CamMethod("cam", raw_cam, uses_gradients=False)
TOKEN_CAM = CamMethod("token_cam", raw_cam, uses_gradients=False)
