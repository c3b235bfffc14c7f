"""Shared machinery of every CAM method: layer hooks, one forward, per-slot gradients, normalisation.

Batching (spec ``cam_methods.md`` section 5): one forward for all requested classes; gradient
methods then back-propagate from the logits only down to the target layer, once per class *slot*
(``targets[:, k]`` for every image at once), so the cost is one forward plus ``K`` cheap partial
backwards, never ``K`` full forward+backward passes. The part of the network before the target
layer builds no autograd graph (its parameters are frozen for the call and the layer output is
re-rooted as a leaf).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

PGC_EPS = 1e-7
WSSS_EPS = 1e-5


def resolve_layer(model: nn.Module, target_layer: nn.Module | str) -> nn.Module:
    """``target_layer`` itself, or the submodule with that dotted name."""
    if isinstance(target_layer, nn.Module):
        return target_layer
    try:
        return model.get_submodule(target_layer)
    except AttributeError as exc:
        raise ValueError(f"target_layer {target_layer!r} is not a submodule of {type(model).__name__}") from exc


@contextlib.contextmanager
def inference_state(model: nn.Module, gradients: bool = True) -> Iterator[None]:
    """Eval mode for the duration of a CAM call, and frozen parameters (``gradients``: the method
    back-propagates to its activations) or no autograd at all; on exit every module gets back its own
    mode and every parameter its flag. Only what is in training mode or trainable is touched:
    ``model.eval()`` and ``model.train()`` on every call walked and reset all modules twice, a fifth of
    the CAM export stage's time for a model that export already keeps in eval mode."""
    training = [m for m in model.modules() if m.training]
    trainable = [p for p in model.parameters() if p.requires_grad] if gradients else []
    for m in training:
        m.training = False
    for p in trainable:
        p.requires_grad_(False)
    try:
        with torch.set_grad_enabled(torch.is_grad_enabled() and gradients):
            yield
    finally:
        for p in trainable:
            p.requires_grad_(True)
        for m in training:
            m.training = True


def _as_map(output: torch.Tensor | tuple) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


def forward_with_activations(model: nn.Module, x: torch.Tensor, layers: list[nn.Module],
                             need_grad: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Logits [B, C] and each layer's output; with ``need_grad`` the outputs are graph leaves the
    logits depend on (gradients w.r.t. them are cheap: nothing before them is recorded)."""
    captured: list[torch.Tensor] = []

    def hook(_module, _inputs, output):
        activation = _as_map(output)
        if need_grad:
            activation = activation.detach().requires_grad_(True)
            captured.append(activation)
            return activation if not isinstance(output, tuple) else (activation, *output[1:])
        captured.append(activation)
        return None

    handles = [layer.register_forward_hook(hook) for layer in layers]
    try:
        with torch.set_grad_enabled(need_grad):
            logits = model(x)
    finally:
        for h in handles:
            h.remove()
    if len(captured) != len(layers):
        raise RuntimeError(f"expected {len(layers)} target-layer outputs, the forward produced {len(captured)} "
                           "(is a target layer called more than once or not at all?)")
    return logits, captured


def selected_logit_sum(logits: torch.Tensor, slot: torch.Tensor) -> torch.Tensor:
    """Sum over the batch of ``logits[b, slot[b]]``, skipping padding slots (``slot[b] < 0``)."""
    valid = slot >= 0
    picked = logits.gather(1, slot.clamp(min=0)[:, None])[:, 0]
    return (picked * valid.to(picked.dtype)).sum()


def slot_gradients(logits: torch.Tensor, activations: list[torch.Tensor], slot: torch.Tensor) -> list[torch.Tensor]:
    """Gradients of ``selected_logit_sum`` w.r.t. each activation (same shapes). In eval mode images
    are independent, so row ``b`` is the gradient of image ``b``'s own target logit."""
    return list(torch.autograd.grad(selected_logit_sum(logits, slot), activations, retain_graph=True,
                                    allow_unused=False))


def minmax(maps: torch.Tensor, eps: float) -> torch.Tensor:
    """Per-map ``(m - min) / (max - min + eps)`` over the last two axes."""
    low = maps.amin(dim=(-2, -1), keepdim=True)
    shifted = maps - low
    return shifted / (shifted.amax(dim=(-2, -1), keepdim=True) + eps)


def max_normalise(maps: torch.Tensor, eps: float = WSSS_EPS) -> torch.Tensor:
    """Per-map ``m / (max + eps)`` (the IRN/WSSS convention)."""
    return maps / (maps.amax(dim=(-2, -1), keepdim=True) + eps)


def upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[B, K, h, w] -> [B, K, H, W], bilinear with half-pixel centres (= cv2 INTER_LINEAR)."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps, size=size, mode="bilinear", align_corners=False)


def postprocess(raw: torch.Tensor, size: tuple[int, int], normalize: str | None) -> torch.Tensor:
    """Raw maps [B, K, h, w] -> output of ``compute_cams``.

    * ``"minmax"``: pytorch-grad-cam's pipeline: ReLU, min-max (eps 1e-7) at ``h x w``, bilinear
      resize, min-max (eps 1e-7) again at the input size.
    * ``"max"``: ReLU, divide by the per-map max + 1e-5, bilinear resize (WSSS/IRN convention).
    * ``None``: the raw maps at feature resolution.
    """
    if normalize is None:
        return raw
    maps = raw.clamp(min=0)
    if normalize == "minmax":
        return minmax(upsample(minmax(maps, PGC_EPS), size), PGC_EPS)
    if normalize == "max":
        return upsample(max_normalise(maps), size)
    raise ValueError(f"normalize must be 'minmax', 'max' or None; got {normalize!r}")
