"""Multi-scale + flip CAM aggregation for pseudo-label generation (spec ``cam_methods.md`` 1.3).

* ``preset="irn"`` (default): scales 1.0/0.5/1.5/2.0; per scale ``ReLU(M(x)) + flip(ReLU(M(flip x)))``;
  all scales resized to the input and summed; divided by ``max + 1e-5`` per class.
* ``preset="toco"``: scales 1.0/0.5/1.5; per scale the element-wise max of the map and the un-flipped
  map of the flipped input, ReLU; summed over scales; ``(M - min) / (max + 1e-5)``.
Inputs are rescaled with torch bilinear interpolation (IRN used PIL bicubic).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from wsss.cams.core import WSSS_EPS, upsample

PRESETS = {
    "irn": {"scales": (1.0, 0.5, 1.5, 2.0), "flip_fusion": "sum", "final": "max"},
    "toco": {"scales": (1.0, 0.5, 1.5), "flip_fusion": "max", "final": "minmax"},
}


def fuse_flip(maps: torch.Tensor, flipped: torch.Tensor, how: str) -> torch.Tensor:
    """Fuse ReLU'd maps [B, K, h, w] with the mirrored maps of the flipped input (already un-flipped)."""
    return maps + flipped if how == "sum" else torch.maximum(maps, flipped)


def multiscale_cams(model, image: torch.Tensor, targets: torch.Tensor, target_layer, method: str = "cam",
                    scales=None, flip: bool = True, preset: str = "irn", **options) -> torch.Tensor:
    """CAMs [B, K, H, W] in [0, 1] of ``image`` [B, 3, H, W] for ``targets`` [B, K] (see module doc)."""
    from wsss.cams import compute_cams

    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}; got {preset!r}")
    p = PRESETS[preset]
    size = tuple(image.shape[-2:])
    total = None
    for scale in (scales or p["scales"]):
        x = image if scale == 1.0 else F.interpolate(image, scale_factor=scale, mode="bilinear",
                                                     align_corners=False)
        batch = torch.cat([x, x.flip(-1)]) if flip else x
        raw = compute_cams(model, batch, torch.cat([targets, targets]) if flip else targets, target_layer,
                           method=method, normalize=None, **options).clamp(min=0)
        if flip:
            n = image.shape[0]
            raw = fuse_flip(raw[:n], raw[n:].flip(-1), p["flip_fusion"])
        raw = upsample(raw, size)
        total = raw if total is None else total + raw
    total = total * (targets >= 0)[..., None, None].to(total.dtype)
    if p["final"] == "max":
        return total / (total.amax(dim=(-2, -1), keepdim=True) + WSSS_EPS)
    low = total.amin(dim=(-2, -1), keepdim=True)
    return (total - low) / ((total - low).amax(dim=(-2, -1), keepdim=True) + WSSS_EPS)
