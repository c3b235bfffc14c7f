"""The image-level classifier: backbone, bias-free 1x1 head, optional auxiliary head."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from wsss.errors import ConfigError
from wsss.models import build_backbone
from wsss.models.classifier_heads import ClassifierHead
from wsss.models.network import BackboneNetwork


class Classifier(BackboneNetwork):
    """A multi-label classifier over ``num_classes`` foreground classes.

    ``forward`` returns logits only, so CAM libraries see a plain classifier; ``feature_map`` (an
    identity the final map flows through) is the default CAM target layer and ``get_classifier()``
    gives the 1x1 conv (timm's API). The auxiliary head reads ``backbone.features[aux_layer]``.
    A backbone may set ``classifier_head`` (conv kwargs of the head, e.g. MCTformer-V2's 3x3 with
    bias) and report ``extras["class_token_logits"]`` (one class token per class), returned by
    ``forward_outputs`` as ``token_logits`` for a loss of its own.
    """

    checkpoint_kind = "classifier"

    def __init__(self, backbone: str, num_classes: int, pooling: str = "gap", temperature: float = 1.0,
                 aux_layer: int | None = None, pretrained: bool | str = False,
                 backbone_kwargs: dict[str, Any] | None = None, prior_bias: bool = False):
        super().__init__()
        self.config = dict(backbone=backbone, num_classes=num_classes, pooling=pooling, temperature=temperature,
                           aux_layer=aux_layer, backbone_kwargs=dict(backbone_kwargs or {}), prior_bias=prior_bias)
        self.backbone = build_backbone(backbone, pretrained=pretrained, num_classes=num_classes,
                                       **(backbone_kwargs or {}))
        self.head = ClassifierHead(self.backbone.final_channels, num_classes, pooling, temperature,
                                   prior_bias=prior_bias, **getattr(self.backbone, "classifier_head", {}))
        self.feature_map = nn.Identity()
        self.aux_layer = aux_layer
        self.aux_head = None
        self.aux_feature_map = nn.Identity()
        if aux_layer is not None:
            try:
                channels = self.backbone.out_channels[aux_layer]
            except IndexError as exc:
                raise ConfigError(f"classifier.aux_layer {aux_layer} out of range for {backbone} "
                                  f"({len(self.backbone.out_channels)} blocks/stages)") from exc
            self.aux_head = ClassifierHead(channels, num_classes, pooling, temperature)

    def get_classifier(self) -> nn.Conv2d:
        return self.head.classifier

    def forward_outputs(self, x: torch.Tensor, return_attn: bool = False) -> dict[str, Any]:
        out = self.backbone(x, return_attn=return_attn)
        features = self.feature_map(out.final)
        result = {"logits": self.head(features), "features": features, "backbone": out,
                  "aux_logits": None, "aux_features": None, "token_logits": out.extras.get("class_token_logits")}
        if self.aux_head is not None:
            aux = self.aux_feature_map(out.features[self.aux_layer])
            result["aux_features"] = aux
            result["aux_logits"] = self.aux_head(aux)
        return result

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits [B, num_classes]."""
        return self.head(self.feature_map(self.backbone(x).final))

    def cam(self, x: torch.Tensor) -> torch.Tensor:
        """Raw CAMs [B, num_classes, h, w] (1x1 conv of the final map, no bias, no ReLU)."""
        return self.head.cam(self.feature_map(self.backbone(x).final))

    def new_parameters(self) -> list[nn.Parameter]:
        heads = [self.head] + ([self.aux_head] if self.aux_head is not None else [])
        return [p for h in heads for p in h.parameters()]

    @classmethod
    def from_checkpoint(cls, path: str | Path) -> Classifier:
        """Rebuild a trained classifier with the refiners it was trained with attached (see
        :func:`wsss.train.classification.load_classifier_checkpoint`)."""
        from wsss.train.classification import load_classifier_checkpoint

        return load_classifier_checkpoint(path)
