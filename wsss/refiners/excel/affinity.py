"""CLIP-ES's class-aware attention affinity (CAA, spec D.4; ExCEL C.5): attention maps turned into a
symmetric transition matrix, applied to each class's CAM inside the CAM's boxes."""

from __future__ import annotations

import cv2
import numpy as np
import torch


def transition_matrix(attention: torch.Tensor, rounds: int = 3, power: int = 2) -> torch.Tensor:
    """Sinkhorn-style normalisation of patch attention [..., n, n]: ``rounds`` times divide by column
    sums then by row sums, symmetrise ``(T + T^T) / 2``, then ``T^power`` (matrix power)."""
    t = attention
    for _ in range(rounds):
        t = t / t.sum(dim=-2, keepdim=True)
        t = t / t.sum(dim=-1, keepdim=True)
    t = (t + t.transpose(-2, -1)) / 2
    return torch.linalg.matrix_power(t, power)


def box_mask(cam: torch.Tensor, threshold: float) -> torch.Tensor:
    """{0, 1} mask [h, w] covering the bounding box of every 8-connected region of
    ``cam > threshold * max(cam)`` (the boxes of OpenCV's contours); all zero for a zero CAM."""
    peak = float(cam.max())
    if peak <= 0:
        return torch.zeros_like(cam)
    binary = (cam > threshold * peak).cpu().numpy().astype(np.uint8)
    count, _, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    mask = np.zeros_like(binary, dtype=np.float32)
    for x, y, w, h, _ in stats[1:count]:
        mask[y:y + h, x:x + w] = 1.0
    return torch.from_numpy(mask).to(cam)


def affinity_refine(cams: torch.Tensor, transition: torch.Tensor, threshold: float) -> torch.Tensor:
    """``cam_c' = (T * m_c[None, :]) @ vec(cam_c)`` for every map of ``cams`` [K, h, w] with
    ``transition`` [hw, hw] and ``m_c`` the box mask of ``cam_c``; returns [K, h, w]."""
    k, h, w = cams.shape
    out = []
    for cam in cams:
        mask = box_mask(cam, threshold).flatten()
        out.append((transition * mask[None, :]) @ cam.flatten())
    return torch.stack(out).reshape(k, h, w) if out else cams


def mean_patch_attention(attentions: list[torch.Tensor], last_n: int) -> torch.Tensor:
    """Mean of the last ``last_n`` maps [B, 1+hw, 1+hw] over patch tokens: [B, hw, hw]."""
    return torch.stack([a[:, 1:, 1:] for a in attentions[-last_n:]]).mean(dim=0)
