"""ToCo label maths (spec ``toco_usage_doei.md`` A.2-A.4, A.6): the multi-scale training CAM, CAM
to high/low pseudo-labels, token labels for patch token contrast and the pair mask.

Valid boxes mark the part of a training crop that holds image pixels (the rest is padding). A box
is ``(top, bottom, left, right)`` in pixels of the network input, end exclusive, as in the
official code.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from wsss.affinity.par import par_refine
from wsss.data.palette import IGNORE_INDEX

__all__ = ["box_mask", "cam_to_label", "label_to_aff_mask", "multi_scale_cam", "normalise_cam", "par_refine",
           "refine_labels_with_background", "roi_map", "token_labels"]

CamFn = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def cam_to_label(
    cam: torch.Tensor,
    cls_label: torch.Tensor,
    high: float,
    low: float,
    ignore_mid: bool = True,
    bkg_thre: float = 0.5,
    valid_box: torch.Tensor | None = None,
    box_size: tuple[int, int] | None = None,
    faithful: bool = False,
) -> torch.Tensor:
    """Pseudo-labels from a CAM by the high/low rule (ToCo ``cam_to_label``).

    With ``v`` / ``c`` the max / argmax over classes of ``cam * cls_label``: with ``ignore_mid``
    the label is ``c + 1`` if ``v > high``, 0 if ``v <= low`` and 255 otherwise (``bkg_thre`` has
    no effect); without it, ``c + 1`` if ``v > bkg_thre`` else 0. Pixels outside ``valid_box`` are
    255.

    Box handling: ``faithful=True`` applies the box coordinates to the label map as they are, even
    when the map is smaller than the input the box refers to (quirk Q9). ``faithful=False``
    (default) maps the box from ``box_size`` (the input size, defaults to the map size) to the map
    grid: start floored, end ceiled.

    Args:
        cam: [B, C-1, h, w] CAM, foreground classes only.
        cls_label: [B, C-1] multi-hot image labels.
        high, low: thresholds of the ignore band.
        ignore_mid: use the high/low rule (training) rather than ``bkg_thre`` (seed evaluation).
        bkg_thre: background threshold without ``ignore_mid``.
        valid_box: optional [B, 4] (top, bottom, left, right) in ``box_size`` pixels.
        box_size: (H, W) the box coordinates refer to.
        faithful: see above.

    Returns:
        LongTensor [B, h, w] with 0 = background, 1..C-1 = classes, 255 = ignore.
    """
    b, _, h, w = cam.shape
    if cls_label.shape != cam.shape[:2]:
        raise ValueError(
            f"cam_to_label: cls_label must be [B, C-1] = {tuple(cam.shape[:2])}; got {tuple(cls_label.shape)}"
        )
    value, index = (cam * cls_label[:, :, None, None].to(cam.dtype)).max(dim=1)
    label = index + 1
    if ignore_mid:
        label = torch.where(value > high, label, torch.full_like(label, IGNORE_INDEX))
        label = torch.where(value <= low, torch.zeros_like(label), label)
    else:
        label = torch.where(value > bkg_thre, label, torch.zeros_like(label))
    if valid_box is None:
        return label
    inside = box_mask(valid_box, (h, w), box_size if box_size is not None else (h, w), faithful)
    return torch.where(inside, label, torch.full_like(label, IGNORE_INDEX))


def box_mask(
    valid_box: torch.Tensor, grid: tuple[int, int], box_size: tuple[int, int], faithful: bool = False
) -> torch.Tensor:
    """Boolean [B, h, w] mask of the valid box on a ``grid`` of size (h, w).

    ``faithful=True`` uses the box coordinates unscaled (quirk Q9); otherwise they are mapped from
    ``box_size`` (H, W) to the grid with the start floored and the end ceiled.

    Args:
        valid_box: [B, 4] (top, bottom, left, right), end exclusive.
        grid: (h, w) of the mask.
        box_size: (H, W) the box coordinates refer to.
        faithful: see above.
    """
    h, w = grid
    mask = torch.zeros(valid_box.shape[0], h, w, dtype=torch.bool, device=valid_box.device)
    sy, sx = h / box_size[0], w / box_size[1]
    for i, (top, bottom, left, right) in enumerate(valid_box.tolist()):
        if faithful:
            r0, r1, c0, c1 = int(top), int(bottom), int(left), int(right)
        else:
            r0, r1 = math.floor(top * sy), math.ceil(bottom * sy)
            c0, c1 = math.floor(left * sx), math.ceil(right * sx)
        mask[i, max(r0, 0) : max(r1, 0), max(c0, 0) : max(c1, 0)] = True
    return mask


def label_to_aff_mask(labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Pair mask of token labels within each image (ToCo ``label_to_aff_mask``).

    Args:
        labels: LongTensor [B, N] (or [B, h, w], flattened row-major).
        ignore_index: label of tokens that take part in no pair.

    Returns:
        LongTensor [B, N, N]: 1 = same label, 0 = different labels, ``ignore_index`` when either
        token is ignored and on the diagonal.
    """
    flat = labels.reshape(labels.shape[0], -1)
    aff = (flat[:, :, None] == flat[:, None, :]).long()
    ignored = flat == ignore_index
    aff = aff.masked_fill(ignored[:, :, None] | ignored[:, None, :], ignore_index)
    eye = torch.eye(flat.shape[1], dtype=torch.bool, device=labels.device)
    return aff.masked_fill(eye[None], ignore_index)


def normalise_cam(cam: torch.Tensor) -> torch.Tensor:
    """Per image and channel: subtract the min, divide by (max + 1e-5). [B, K, H, W] -> same."""
    cam = cam - cam.amin(dim=(2, 3), keepdim=True)
    return cam / (cam.amax(dim=(2, 3), keepdim=True) + 1e-5)


def multi_scale_cam(
    cam_fn: CamFn, images: torch.Tensor, scales: Sequence[float] = (1.0, 0.5, 1.5)
) -> tuple[torch.Tensor, torch.Tensor]:
    """Training-time multi-scale + flip CAM of ToCo (``multi_scale_cam2``), without gradient.

    At each scale (size ``int(s * H)``, bilinear) the image and its mirror go through ``cam_fn``;
    each CAM is resized to (H, W), the mirrored one flipped back, the elementwise max taken and
    ReLU applied. The scales are summed and normalised with :func:`normalise_cam`.

    Args:
        cam_fn: maps [N, 3, h, w] images to ``(cam, aux_cam)``, each [N, C-1, h', w'] (raw class
            maps of the final and auxiliary classifiers).
        images: [B, 3, H, W] network inputs.
        scales: image scales.

    Returns:
        ``(cam, aux_cam)``, each [B, C-1, H, W] in [0, 1].
    """
    b, _, h, w = images.shape
    per_scale: list[list[torch.Tensor]] = [[], []]
    with torch.no_grad():
        for s in scales:
            x = images if s == 1.0 else F.interpolate(
                images, size=(int(s * h), int(s * w)), mode="bilinear", align_corners=False
            )
            maps = cam_fn(torch.cat([x, x.flip(-1)], dim=0))
            for i, m in enumerate(maps):
                m = F.interpolate(m, size=(h, w), mode="bilinear", align_corners=False)
                per_scale[i].append(F.relu(torch.maximum(m[:b], m[b:].flip(-1))))
    cam, aux_cam = (normalise_cam(torch.stack(maps).sum(dim=0)) for maps in per_scale)
    return cam, aux_cam


def token_labels(
    cam: torch.Tensor,
    cls_label: torch.Tensor,
    grid: tuple[int, int],
    high: float,
    low: float,
    valid_box: torch.Tensor | None = None,
    faithful: bool = False,
) -> torch.Tensor:
    """Token labels for patch token contrast (A.4): the CAM resized to the token grid, then
    :func:`cam_to_label` with the ignore band.

    ``faithful=True`` applies the input-pixel box to the token grid unscaled (Q9); the default maps
    it to token units.

    Args:
        cam: [B, C-1, H, W] multi-scale (auxiliary) CAM at input size.
        cls_label: [B, C-1] multi-hot.
        grid: (h, w) token grid.
        high, low: thresholds.
        valid_box: optional [B, 4] box in input pixels.
        faithful: see above.

    Returns:
        LongTensor [B, h * w], row-major.
    """
    small = F.interpolate(cam, size=grid, mode="bilinear", align_corners=False)
    labels = cam_to_label(
        small, cls_label, high, low, ignore_mid=True, valid_box=valid_box,
        box_size=tuple(cam.shape[-2:]), faithful=faithful,
    )
    return labels.flatten(1)


def roi_map(cam: torch.Tensor, cls_label: torch.Tensor, high: float, low: float) -> torch.Tensor:
    """Region-of-interest map for local-crop selection (ToCo ``cam_to_roi_mask2``).

    Args:
        cam: [B, C-1, H, W]; cls_label: [B, C-1].

    Returns:
        LongTensor [B, H, W]: 0 if ``v <= low``, 2 if ``v >= high``, else 1 (``v`` = max over the
        present classes).
    """
    value = (cam * cls_label[:, :, None, None].to(cam.dtype)).amax(dim=1)
    roi = torch.ones_like(value, dtype=torch.long)
    roi = roi.masked_fill(value <= low, 0)
    return roi.masked_fill(value >= high, 2)


def refine_labels_with_background(
    images: torch.Tensor,
    cam: torch.Tensor,
    cls_label: torch.Tensor,
    high: float,
    low: float,
    valid_box: torch.Tensor | None = None,
    down_scale: int = 2,
    par: bool = True,
    faithful: bool = False,
) -> torch.Tensor:
    """Segmentation pseudo-labels of ToCo (``refine_cams_with_bkg_v2``, spec A.6).

    The CAM of the present classes is stacked under a constant background score, once ``high``
    and once ``low``; each stack is (with ``par``) PAR-refined on the image at ``1 / down_scale``
    resolution and resized back, then arg-maxed over [background, present classes]. A pixel gets
    its class where the ``high`` run says foreground, background where both runs say background,
    255 elsewhere and outside ``valid_box``. Without ``par`` this equals :func:`cam_to_label`
    with the same thresholds.

    Args:
        images: [B, 3, H, W] images (de-normalised or not: PAR only uses colour ratios).
        cam: [B, C-1, H, W] multi-scale CAM in [0, 1].
        cls_label: [B, C-1] multi-hot.
        high, low: background scores of the two runs.
        valid_box: optional [B, 4] box in input pixels.

    Returns:
        LongTensor [B, H, W].
    """
    if not par:
        return cam_to_label(cam, cls_label, high, low, ignore_mid=True, valid_box=valid_box, faithful=faithful)
    b, _, h, w = images.shape
    small = (h // down_scale, w // down_scale)
    small_images = F.interpolate(images, size=small, mode="bilinear", align_corners=False)
    cam = cam * cls_label[:, :, None, None].to(cam.dtype)
    labels = []
    for score in (high, low):
        stacked = torch.cat([torch.full_like(cam[:, :1], score), cam], dim=1)
        stacked = F.interpolate(stacked, size=small, mode="bilinear", align_corners=False)
        run = torch.empty(b, h, w, dtype=torch.long, device=cam.device)
        for i in range(b):
            keys = torch.cat([torch.zeros(1, dtype=torch.long, device=cam.device),
                              cls_label[i].nonzero()[:, 0] + 1])
            probs = stacked[i : i + 1, keys].softmax(dim=1)
            refined = par_refine(small_images[i : i + 1], probs)
            refined = F.interpolate(refined, size=(h, w), mode="bilinear", align_corners=False)
            run[i] = keys[refined.argmax(dim=1)[0]]
        labels.append(run)
    high_run, low_run = labels
    label = torch.where(high_run == 0, torch.full_like(high_run, IGNORE_INDEX), high_run)
    label = torch.where((high_run == 0) & (low_run == 0), torch.zeros_like(label), label)
    if valid_box is None:
        return label
    inside = box_mask(valid_box, (h, w), (h, w), faithful)
    return torch.where(inside, label, torch.full_like(label, IGNORE_INDEX))
