"""ToCo view construction (spec ``toco_usage_doei.md`` A.5): the second global view and the local
crops with their positive/negative flags, on batched tensors with an explicit random generator.

All randomness comes from a ``torch.Generator`` on the CPU, so a view is reproducible from the
generator's seed whatever device the images are on.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from wsss.errors import ConfigError


def _uniform(generator: torch.Generator, n: int, low: float, high: float) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def _gray(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma of [B, 3, H, W] RGB in [0, 1] -> [B, 1, H, W]."""
    return 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]


def colour_jitter(
    images: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    generator: torch.Generator,
    brightness: float = 0.4,
    contrast: float = 0.4,
    saturation: float = 0.2,
    p_jitter: float = 0.8,
    p_gray: float = 0.2,
) -> torch.Tensor:
    """Per-image brightness/contrast/saturation jitter (prob. ``p_jitter``; factors uniform in
    ``1 +- strength``, official strengths 0.4/0.4/0.2) and grayscale (prob. ``p_gray``) on
    normalised images: the photometric part of the DINO augmentation ToCo uses (hue jitter, blur
    and solarisation are left out).

    Args:
        images: [B, 3, H, W] normalised with ``mean`` / ``std``.
        generator: CPU generator.

    Returns:
        [B, 3, H, W] normalised, same geometry.
    """
    b = images.shape[0]
    dev, dt = images.device, images.dtype
    mean_t = torch.tensor(mean, device=dev, dtype=dt)[None, :, None, None]
    std_t = torch.tensor(std, device=dev, dtype=dt)[None, :, None, None]
    x = images * std_t + mean_t
    apply = (torch.rand(b, generator=generator) < p_jitter).to(dev, dt)[:, None, None, None]
    f_bright, f_contrast, f_sat = (
        1 + apply * (_uniform(generator, b, -s, s).to(dev, dt)[:, None, None, None])
        for s in (brightness, contrast, saturation)
    )
    x = (x * f_bright).clamp(0, 1)
    mean_gray = _gray(x).mean(dim=(2, 3), keepdim=True)
    x = ((x - mean_gray) * f_contrast + mean_gray).clamp(0, 1)
    gray = _gray(x)
    x = ((x - gray) * f_sat + gray).clamp(0, 1)
    to_gray = (torch.rand(b, generator=generator) < p_gray).to(dev)[:, None, None, None]
    x = torch.where(to_gray, _gray(x).expand_as(x), x)
    return (x - mean_t) / std_t


def random_resized_crop(
    images: torch.Tensor,
    generator: torch.Generator,
    scale: tuple[float, float] = (0.4, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    flip: bool = True,
) -> torch.Tensor:
    """Per-image RandomResizedCrop back to the input size, plus a random horizontal flip.

    The area fraction is uniform in ``scale`` and the log aspect ratio uniform in ``ratio``; a box
    that does not fit is shrunk to the image.

    Args:
        images: [B, 3, H, W].
        generator: CPU generator.

    Returns:
        [B, 3, H, W].
    """
    b, _, h, w = images.shape
    area = _uniform(generator, b, *scale) * h * w
    log_r = _uniform(generator, b, float(torch.tensor(ratio[0]).log()), float(torch.tensor(ratio[1]).log()))
    aspect = log_r.exp()
    out = []
    pos = torch.rand(b, 2, generator=generator)
    flips = torch.rand(b, generator=generator) < 0.5
    for i in range(b):
        cw = int(round(float((area[i] * aspect[i]).sqrt())))
        ch = int(round(float((area[i] / aspect[i]).sqrt())))
        cw, ch = min(max(cw, 1), w), min(max(ch, 1), h)
        top = int(pos[i, 0] * (h - ch + 1))
        left = int(pos[i, 1] * (w - cw + 1))
        crop = images[i : i + 1, :, top : top + ch, left : left + cw]
        crop = F.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False)
        if flip and bool(flips[i]):
            crop = crop.flip(-1)
        out.append(crop)
    return torch.cat(out, dim=0)


def sample_local_crops(
    images: torch.Tensor,
    roi: torch.Tensor,
    n_local: int,
    size: int,
    generator: torch.Generator,
    negative_ratio: float = 0.2,
    faithful: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Local crops centred away from confident foreground, with flags (ToCo ``crop_from_roi_neg``).

    Crop centres are drawn without replacement, uniformly from the pixels at least ``size // 2``
    from the border whose ROI is <= 1 (not confident foreground); if there are fewer than
    ``n_local`` such pixels, from all pixels in that margin.

    Flag (1 = positive, 0 = negative): ``faithful=True`` marks a crop negative when
    ``sum(ROI in crop) / size**2 <= negative_ratio`` (foreground, ROI 2, counts twice: Q11); the
    default marks it negative when the fraction of crop pixels with ROI >= 1 is <= the ratio.

    ``images`` must have the geometry of the ROI map (Q12 is handled by the caller, which decides
    whether the crop source is flipped).

    Args:
        images: [B, 3, H, W] crop source.
        roi: LongTensor [B, H, W] with values 0 / 1 / 2 (see ``labels.roi_map``).
        n_local: crops per image.
        size: crop side in pixels (must be < H and < W).
        generator: CPU generator.

    Returns:
        ``(crops [B, n_local, 3, size, size], flags [B, n_local] float)``.
    """
    b, _, h, w = images.shape
    margin = size // 2
    if h - 2 * margin <= 0 or w - 2 * margin <= 0:
        raise ConfigError(
            f"toco: local crop size {size} does not fit images of {h}x{w}; set refiner local_size "
            f"below the training crop size"
        )
    crops = torch.empty(b, n_local, images.shape[1], size, size, device=images.device, dtype=images.dtype)
    flags = torch.ones(b, n_local, device=images.device, dtype=images.dtype)
    inner = roi[:, margin : h - margin, margin : w - margin].cpu()
    inner_w = w - 2 * margin
    for i in range(b):
        candidates = (inner[i] <= 1).flatten().nonzero()[:, 0]
        if candidates.numel() < n_local:
            candidates = torch.arange(inner[i].numel())
        if candidates.numel() < n_local:
            raise ConfigError(
                f"toco: {n_local} local crops of {size} px need more room than {h}x{w} images give; "
                f"lower refiner n_local or local_size"
            )
        chosen = candidates[torch.randperm(candidates.numel(), generator=generator)[:n_local]]
        for j, flat in enumerate(chosen.tolist()):
            top, left = divmod(flat, inner_w)
            crops[i, j] = images[i, :, top : top + size, left : left + size]
            window = roi[i, top : top + size, left : left + size]
            counted = window.sum() if faithful else (window >= 1).sum()
            # a float32 tensor compared with a Python float, as in the official code
            if bool(counted / (size * size) <= negative_ratio):
                flags[i, j] = 0
    return crops, flags
