"""Backbones (CNN and ViT behind one interface), classifier and segmentation models.

``BACKBONES`` maps a config name to a factory ``(pretrained=False, **kwargs) -> Backbone``. The names
in ``CLASS_TOKEN_BACKBONES`` have one class token per class: :func:`build_backbone` passes them
``num_class_tokens`` from the classifier's number of classes.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from wsss.errors import ConfigError
from wsss.models.backbone_base import Backbone, BackboneOutput
from wsss.models.cnn import TimmCNN
from wsss.models.mctformer import MCTformerViT
from wsss.models.vit import TimmViT

BACKBONES: dict[str, Callable[..., Backbone]] = {
    **{n: partial(TimmCNN, n) for n in ("resnet10t", "resnet18", "resnet34", "resnet50", "resnet101")},
    "efficientnet_lite0": partial(TimmCNN, "efficientnet_lite0", "tf_efficientnet_lite0"),
    "efficientnet_lite2": partial(TimmCNN, "efficientnet_lite2", "tf_efficientnet_lite2"),
    **{n: partial(TimmViT, n) for n in ("vit_tiny_patch16_224", "vit_small_patch16_224", "vit_base_patch16_224",
                                        "deit_tiny_patch16_224", "deit_small_patch16_224", "deit_base_patch16_224")},
    # a ViT of any size for small runs and tests: depth, embed_dim, num_heads as keyword arguments
    "vit_custom": partial(TimmViT, "vit_custom", "vit_tiny_patch16_224"),
    # MCTformer-V2 hosts: DeiT-S as the official model, and any size for small runs and tests
    "mctformer_deit_small_patch16_224": partial(MCTformerViT, "mctformer_deit_small_patch16_224",
                                                "deit_small_patch16_224"),
    "mctformer_custom": partial(MCTformerViT, "mctformer_custom", "deit_small_patch16_224"),
}
CLASS_TOKEN_BACKBONES = frozenset({"mctformer_deit_small_patch16_224", "mctformer_custom"})


def build_backbone(name: str, pretrained: bool | str = False, num_classes: int | None = None, **kwargs) -> Backbone:
    """The backbone ``name``; ``num_classes`` sizes the class tokens of ``CLASS_TOKEN_BACKBONES``."""
    if name not in BACKBONES:
        raise ConfigError(f"backbone: unknown name {name!r}; choose one of {sorted(BACKBONES)}")
    if name in CLASS_TOKEN_BACKBONES:
        if num_classes is None:
            raise ConfigError(f"backbone {name!r} has one class token per class; it needs the number of classes")
        kwargs["num_class_tokens"] = num_classes
    return BACKBONES[name](pretrained=pretrained, **kwargs)


__all__ = ["BACKBONES", "CLASS_TOKEN_BACKBONES", "Backbone", "BackboneOutput", "build_backbone"]
