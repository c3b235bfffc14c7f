"""USAGE-style generation loss: temperature-controlled pooling of the CAM into class scores and the
deterministic network-type temperature rule (spec ``toco_usage_doei.md`` B.2, a reconstruction)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from wsss.errors import ConfigError
from wsss.models.classifier_heads import softmax_pool


def temperature_pool(cam: torch.Tensor, temperature: float, relative: bool = False) -> torch.Tensor:
    """Class scores ``score_c = sum_i softmax_i(M_c / (tau * s_c)) * M_c,i``: [B, C, h, w] -> [B, C].

    ``s_c = 1`` (``relative=False``, the spec's formula: ``tau`` in units of the raw CAM) or the
    map's detached range ``max - min`` (+1e-6) (``relative=True``: ``tau`` in units of the map's own
    spread, so the same ``tau`` shapes a map alike whatever the scale of the network's logits).
    ``tau -> 0`` gives max pooling (only the peak is scored: compact seeds), ``tau -> inf`` mean
    pooling (every position is scored: spread seeds); the score is non-decreasing as ``tau``
    decreases and equals ``v`` for a constant map ``v``. Gradient flows through the values and,
    except for ``s_c``, through the weights.
    """
    if temperature <= 0:
        raise ConfigError(f"usage: the generation temperature must be > 0; got {temperature}")
    if not relative:
        return softmax_pool(cam, temperature).flatten(1)
    flat = cam.flatten(2)
    spread = (flat.amax(-1, keepdim=True) - flat.amin(-1, keepdim=True)).detach() + 1e-6
    weights = torch.softmax(flat / (temperature * spread), dim=-1)
    return (weights * flat).sum(-1)


def family_temperature(family: str, cnn_temperature: float, vit_temperature: float) -> float:
    """The deterministic rule: CNN seeds are under-activated, so they get the higher temperature
    (closer to mean pooling, which rewards spreading the activation); ViT seeds are over-activated,
    so they get the lower one (closer to max pooling, which rewards a compact peak)."""
    if family not in ("cnn", "vit"):
        raise ConfigError(f"usage: unknown backbone family {family!r}")
    return cnn_temperature if family == "cnn" else vit_temperature


def generation_loss(cam: torch.Tensor, labels: torch.Tensor, temperature: float, relative: bool = False) -> torch.Tensor:
    """Multi-label soft-margin loss of the temperature-pooled scores (:func:`temperature_pool`) of
    the raw CAM. ``cam`` [B, C, h, w] (raw class maps, no ReLU), ``labels`` [B, C] in {0, 1} -> scalar."""
    return F.multilabel_soft_margin_loss(temperature_pool(cam, temperature, relative), labels)
