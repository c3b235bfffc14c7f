"""The CAM method zoo.

``CAM_METHODS`` maps a name to its :class:`~wsss.cams.base.CamMethod`; :func:`compute_cams` is the one
entry point: every requested class of every image in one call, for any model returning logits.
"""

from __future__ import annotations

import torch
from torch import nn

from wsss.cams.attn_cam import ATTN_CAM
from wsss.cams.base import CamMethod
from wsss.cams.cam import CAM, TOKEN_CAM
from wsss.cams.cfcam import CFCAM
from wsss.cams.core import inference_state, postprocess, resolve_layer
from wsss.cams.eigencam import EIGENCAM
from wsss.cams.gradcam import GRADCAM
from wsss.cams.gradcampp import GRADCAMPP
from wsss.cams.hirescam import HIRESCAM
from wsss.cams.layer_select import layer_select_cams
from wsss.cams.layercam import LAYERCAM
from wsss.cams.mctformer import MCTFORMER, MCTFORMER_ATTN, MCTFORMER_PATCHCAM
from wsss.cams.multiscale import multiscale_cams
from wsss.cams.smoothgradcampp import SMOOTHGRADCAMPP
from wsss.cams.tam import rank_gaussian_filter
from wsss.cams.xgradcam import XGRADCAM

CAM_METHODS: dict[str, CamMethod] = {m.name: m for m in (
    CAM, GRADCAM, GRADCAMPP, SMOOTHGRADCAMPP, XGRADCAM, LAYERCAM, HIRESCAM, EIGENCAM, CFCAM, TOKEN_CAM, ATTN_CAM,
    MCTFORMER, MCTFORMER_ATTN, MCTFORMER_PATCHCAM,
)}


def register_cam_method(method: CamMethod) -> None:
    """Add ``method`` to :data:`CAM_METHODS` (methods living outside this package, e.g. the CLIP methods
    of :mod:`wsss.refiners.excel`, registered by :mod:`wsss.refiners`)."""
    CAM_METHODS[method.name] = method


def compute_cams(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, target_layer: nn.Module | str,
                 method: str = "gradcam", normalize: str | None = "max", chunk_size: int | None = None,
                 denoise: str | None = None, **options) -> torch.Tensor:
    """CAMs of ``targets`` for ``images`` from ``target_layer`` of ``model``.

    Args:
        model: any module returning logits [B, C]; put in eval mode (and restored) for the call.
        images: [B, 3, H, W], normalised as the model expects.
        targets: LongTensor [B, K] of logit indices, every positive class of each image; entries < 0
            are padding and give all-zero maps.
        target_layer: a module of ``model`` or its dotted name (ViT token outputs [B, P+N, D] are
            reshaped to maps after dropping ``model.num_prefix_tokens`` prefix tokens).
        method: a name of :data:`CAM_METHODS`.
        normalize: ``"max"`` (WSSS: ReLU, / max + 1e-5, bilinear to H x W), ``"minmax"``
            (pytorch-grad-cam's exact post-processing) or ``None`` (raw maps at feature resolution).
        chunk_size: images per forward (bounds memory for large B x K); default all at once.
        denoise: ``"tam"`` applies TAM's rank Gaussian filter to the ReLU'd raw maps.
        options: method options (e.g. ``n_samples``/``sigma`` of ``smoothgradcampp``, ``grid``).

    Returns:
        [B, K, H, W] (or [B, K, h, w] with ``normalize=None``), detached.
    """
    if method not in CAM_METHODS:
        raise ValueError(f"unknown CAM method {method!r}; choose one of {sorted(CAM_METHODS)}")
    if targets.dim() != 2 or targets.shape[0] != images.shape[0]:
        raise ValueError(f"targets must be [B, K] with B = {images.shape[0]}; got {tuple(targets.shape)}")
    targets = targets.to(images.device).long()
    layer = resolve_layer(model, target_layer) if target_layer is not None else None
    step = chunk_size or images.shape[0]
    chunks = []
    with inference_state(model, CAM_METHODS[method].uses_gradients):
        for start in range(0, images.shape[0], step):
            part = targets[start:start + step]
            raw = CAM_METHODS[method].raw(model, images[start:start + step], part, layer, **options).detach()
            chunks.append(raw * (part >= 0)[..., None, None].to(raw.dtype))
    raw = torch.cat(chunks)
    if denoise == "tam":
        raw = rank_gaussian_filter(raw.clamp(min=0))
    elif denoise is not None:
        raise ValueError(f"denoise must be None or 'tam'; got {denoise!r}")
    return postprocess(raw, tuple(images.shape[-2:]), normalize)


__all__ = ["CAM_METHODS", "CamMethod", "compute_cams", "register_cam_method", "layer_select_cams", "multiscale_cams"]
