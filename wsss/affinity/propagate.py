"""Random-walk propagation of one image's CAMs with a trained boundary network (IRN
``step/make_sem_seg_labels.py``)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from wsss.affinity.network import STRIDE, AffinityNet
from wsss.affinity.random_walk import random_walk
from wsss.data.transforms import normalise_image


def strided_cams(cams: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """CAMs [K, H, W] averaged onto the stride-4 ``grid`` and max-normalised per class (IRN keeps a
    stride-4 CAM made at that size; ours is made at full size and pooled)."""
    small = F.interpolate(cams[None], size=grid, mode="area")[0]
    return small / (small.amax(dim=(1, 2), keepdim=True) + 1e-5)


def propagate_cams(model: AffinityNet, image: np.ndarray, cams: np.ndarray, radius: int = 5, beta: float = 10.0,
                   exp_times: int = 8) -> np.ndarray:
    """Propagated maps float32 [K, H, W] in [0, 1] of ``cams`` [K, H, W] on ``image`` uint8 [H, W, 3]:
    the random walk on the stride-4 grid, bilinearly upsampled by 4, cropped to the image and divided
    by its maximum over all classes (as IRN before its background threshold)."""
    h, w = image.shape[:2]
    if cams.shape[0] == 0:
        return np.zeros((0, h, w), np.float32)
    x = normalise_image(image, model.mean, model.std)[None]
    with torch.no_grad():
        boundary = model.boundary(x)
    small = strided_cams(torch.from_numpy(np.asarray(cams, np.float32)), tuple(boundary.shape))
    walked = random_walk(small, boundary, radius=radius, beta=beta, exp_times=exp_times)
    up = F.interpolate(walked[None], scale_factor=STRIDE, mode="bilinear", align_corners=False)[0, :, :h, :w]
    return (up / up.max().clamp_min(1e-12)).clamp_(0, 1).numpy()
