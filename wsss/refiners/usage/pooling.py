"""USAGE-style generation loss: temperature-controlled pooling of the CAM into class scores and the
deterministic network-type temperature rule (spec ``toco_usage_doei.md`` B.2, a reconstruction)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from wsss.errors import ConfigError
from wsss.models.classifier_heads import softmax_pool


def temperature_pool(cam: torch.Tensor, temperature: float) -> torch.Tensor:
    """Class scores ``score_c = sum_i softmax_i(M_c / tau) * M_c,i``: [B, C, h, w] -> [B, C].

    ``tau -> 0`` gives max pooling (only the peak is scored: compact seeds), ``tau -> inf`` mean
    pooling (every position is scored: spread seeds); the score is non-decreasing as ``tau``
    decreases and equals ``v`` for a constant map ``v``. Gradient flows through both the weights and
    the values.
    """
    if temperature <= 0:
        raise ConfigError(f"usage: the generation temperature must be > 0; got {temperature}")
    return softmax_pool(cam, temperature).flatten(1)


def family_temperature(family: str, cnn_temperature: float, vit_temperature: float) -> float:
    """The deterministic rule: CNN seeds are under-activated, so they get the higher temperature
    (closer to mean pooling, which rewards spreading the activation); ViT seeds are over-activated,
    so they get the lower one (closer to max pooling, which rewards a compact peak)."""
    if family not in ("cnn", "vit"):
        raise ConfigError(f"usage: unknown backbone family {family!r}")
    return cnn_temperature if family == "cnn" else vit_temperature


def generation_loss(cam: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """Multi-label soft-margin loss of the temperature-pooled scores of the raw CAM.

    ``cam`` [B, C, h, w] (raw class maps, no ReLU), ``labels`` [B, C] in {0, 1} -> scalar."""
    return F.multilabel_soft_margin_loss(temperature_pool(cam, temperature), labels)
