"""Random-walk propagation of one image's CAMs with a trained boundary network (IRN
``step/make_sem_seg_labels.py``), with IRN's constant background score or PSA's walked background
channel (Ahn & Kwak, CVPR 2018, ``infer_aff.py``)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from wsss.affinity.network import STRIDE, AffinityNet
from wsss.affinity.par import par_cams
from wsss.affinity.random_walk import random_walk
from wsss.config import RW_BACKGROUNDS
from wsss.data.transforms import normalise_image

RATIO_ARGMAX = 0.5  # the threshold of foreground_ratio maps that is the plain argmax


def strided_cams(cams: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """CAMs [K, H, W] averaged onto the stride-4 ``grid`` and max-normalised per class (IRN keeps a
    stride-4 CAM made at that size; ours is made at full size and pooled)."""
    small = F.interpolate(cams[None], size=grid, mode="area")[0]
    return small / (small.amax(dim=(1, 2), keepdim=True) + 1e-5)


def background_score(cams: torch.Tensor, power: float) -> torch.Tensor:
    """PSA's background score [1, H, W] of max-normalised CAMs [K, H, W]: ``(1 - max_k cam_k) ** power``
    (``alpha`` in PSA's ``infer_aff.py``: 16 for its VOC CAMs, whose best threshold is low)."""
    return (1 - cams.amax(dim=0, keepdim=True)).clamp_min(0) ** power


def foreground_ratio(walked: torch.Tensor) -> torch.Tensor:
    """Maps [K, H, W] ``fg_k / (fg_k + bg)`` of walked scores [1 + K, H, W] (background first): at a
    threshold of 0.5 they give PSA's argmax over background and classes, and at ``t`` the argmax with
    the background scaled by ``t / (1 - t)``, so a threshold sweep also tunes the background."""
    background, foreground = walked[:1], walked[1:]
    return foreground / (foreground + background).clamp_min(1e-12)


def propagate_cams(model: AffinityNet, image: np.ndarray, cams: np.ndarray, radius: int = 5, beta: float = 10.0,
                   exp_times: int = 8, background: str = "threshold", bg_power: float = 16.0,
                   cam_power: float = 1.0, par: bool = False) -> np.ndarray:
    """Propagated maps float32 [K, H, W] in [0, 1] of ``cams`` [K, H, W] on ``image`` uint8 [H, W, 3]:
    the random walk on the stride-4 grid, bilinearly upsampled by 4 and cropped to the image.

    ``background="threshold"`` (IRN) walks the classes only and divides the maps by their maximum over
    all classes, for a constant background threshold. ``"walk"`` (PSA) also walks the background score
    of :func:`background_score` (made at full size and pooled like the CAMs) and returns
    :func:`foreground_ratio`. The pooled class CAMs are raised to ``cam_power`` before the walk (1:
    IRN; 1.5: AdvCAM); the background score comes from the CAMs before the power. ``par`` first
    refines the walked background and classes together with PAR (only in this mode: with
    ``"threshold"`` the masks are refined, see ``affinity.rw_par``)."""
    if background not in RW_BACKGROUNDS:
        raise ValueError(f"background must be one of {RW_BACKGROUNDS}; got {background!r}")
    h, w = image.shape[:2]
    if cams.shape[0] == 0:
        return np.zeros((0, h, w), np.float32)
    x = normalise_image(image, model.mean, model.std)[None]
    with torch.no_grad():
        boundary = model.boundary(x)
    full = torch.from_numpy(np.asarray(cams, np.float32))
    small = strided_cams(full, tuple(boundary.shape)) ** cam_power
    if background == "walk":
        bg = F.interpolate(background_score(full, bg_power)[None], size=tuple(boundary.shape), mode="area")[0]
        small = torch.cat([bg, small])
    walked = random_walk(small, boundary, radius=radius, beta=beta, exp_times=exp_times)
    up = F.interpolate(walked[None], scale_factor=STRIDE, mode="bilinear", align_corners=False)[0, :, :h, :w]
    up = up / up.max().clamp_min(1e-12)  # IRN's threshold and PAR's input need [0, 1]; the ratio is scale-free
    if background == "threshold":
        return up.clamp_(0, 1).numpy()
    if par:
        up = torch.from_numpy(par_cams(image, up.numpy()))
    return foreground_ratio(up).clamp_(0, 1).numpy()
