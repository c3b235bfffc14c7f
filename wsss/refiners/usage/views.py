"""The student's view for the USAGE-style consistency: the input with the dropped regions erased,
optionally flipped and rescaled, and the way back from its CAM to the teacher's frame."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def erase(images: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Zero the input where ``keep`` is False: [B, 3, H, W], [B, 1, h, w] -> [B, 3, H, W].

    The mask is upsampled by nearest neighbour, so each dropped CAM cell erases its whole
    receptive-field block (a ViT patch when the CAM grid is the patch grid). Zero in the
    normalised input is the mean colour of the backbone's normalisation."""
    mask = F.interpolate(keep.to(images.dtype), size=images.shape[-2:], mode="nearest")
    return images * mask


def scaled_size(size: tuple[int, int], scale: float, multiple: int) -> tuple[int, int]:
    """``size`` times ``scale``, rounded to a positive multiple of ``multiple`` (the stride)."""
    return tuple(max(multiple, round(s * scale / multiple) * multiple) for s in size)


def student_view(images: torch.Tensor, keep: torch.Tensor, flip: bool, scale: float, stride: int) -> torch.Tensor:
    """Erased, then horizontally flipped (``flip``) and resized by ``scale`` (to a multiple of
    ``stride``): [B, 3, H, W] -> [B, 3, H', W']."""
    view = erase(images, keep)
    if flip:
        view = view.flip(-1)
    if scale != 1.0:
        view = F.interpolate(view, size=scaled_size(tuple(images.shape[-2:]), scale, stride), mode="bilinear",
                             align_corners=False)
    return view


def map_back(cam: torch.Tensor, size: tuple[int, int], flip: bool) -> torch.Tensor:
    """A student-view CAM [B, C, h', w'] in the teacher's frame [B, C, *size]: un-flip, resize."""
    if flip:
        cam = cam.flip(-1)
    if tuple(cam.shape[-2:]) != tuple(size):
        cam = F.interpolate(cam, size=size, mode="bilinear", align_corners=False)
    return cam
