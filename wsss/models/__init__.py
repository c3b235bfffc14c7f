"""Backbones (CNN and ViT behind one interface), classifier and segmentation models.

``BACKBONES`` maps a config name to a factory ``(pretrained=False, **kwargs) -> Backbone``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from wsss.errors import ConfigError
from wsss.models.backbone_base import Backbone, BackboneOutput
from wsss.models.cnn import TimmCNN
from wsss.models.vit import TimmViT

BACKBONES: dict[str, Callable[..., Backbone]] = {
    **{n: partial(TimmCNN, n) for n in ("resnet10t", "resnet18", "resnet34", "resnet50", "resnet101")},
    "efficientnet_lite0": partial(TimmCNN, "efficientnet_lite0", "tf_efficientnet_lite0"),
    "efficientnet_lite2": partial(TimmCNN, "efficientnet_lite2", "tf_efficientnet_lite2"),
    **{n: partial(TimmViT, n) for n in ("vit_tiny_patch16_224", "vit_small_patch16_224", "vit_base_patch16_224",
                                        "deit_tiny_patch16_224", "deit_small_patch16_224", "deit_base_patch16_224")},
    # a ViT of any size for small runs and tests: depth, embed_dim, num_heads as keyword arguments
    "vit_custom": partial(TimmViT, "vit_custom", "vit_tiny_patch16_224"),
}


def build_backbone(name: str, pretrained: bool | str = False, **kwargs) -> Backbone:
    if name not in BACKBONES:
        raise ConfigError(f"backbone: unknown name {name!r}; choose one of {sorted(BACKBONES)}")
    return BACKBONES[name](pretrained=pretrained, **kwargs)


__all__ = ["BACKBONES", "Backbone", "BackboneOutput", "build_backbone"]
