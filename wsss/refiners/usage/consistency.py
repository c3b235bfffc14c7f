"""USAGE-style regularisation: drop the teacher's most-activated regions from the student's view and
ask the student's activation over what is left to match the teacher's (spec ``toco_usage_doei.md``
B.2, a reconstruction; the paper's "self-adaptive network adjustment" is not public in detail)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

EPS = 1e-5


def normalise_maps(cam: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Spatial activation distribution of each class over the kept positions: ReLU, zero outside
    ``keep``, divide by the maximum over the kept positions (+1e-5), so values lie in [0, 1).

    ``cam`` [B, C, h, w], ``keep`` [B, 1, h, w] (bool or {0, 1}) -> [B, C, h, w]. Only the shape
    of a map counts: a map and a positive multiple of it normalise alike.
    """
    maps = F.relu(cam) * keep.to(cam.dtype)
    return maps / (maps.flatten(2).amax(-1)[..., None, None] + EPS)


def top_activation_keep(cam: torch.Tensor, labels: torch.Tensor, threshold: float) -> torch.Tensor:
    """Keep mask [B, 1, h, w] (bool, True = kept) that drops every position where some present
    class reaches ``threshold`` of its maximum (the most-activated regions).

    ``cam`` [B, C, h, w] raw class maps, ``labels`` [B, C] in {0, 1}. An image without present
    classes, or whose present maps are nowhere positive, keeps every position.
    """
    norm = normalise_maps(cam, torch.ones_like(cam[:, :1]))
    present = labels[:, :, None, None] > 0
    return ~((norm >= threshold) & present).any(dim=1, keepdim=True)


def consistency_loss(student_cam: torch.Tensor, teacher_cam: torch.Tensor, labels: torch.Tensor,
                     keep: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of the student's and the (detached) teacher's activation
    distributions (:func:`normalise_maps`) over the kept positions, averaged over the present
    classes of the batch.

    ``student_cam``, ``teacher_cam`` [B, C, h, w] in the same frame, ``labels`` [B, C],
    ``keep`` [B, 1, h, w] -> scalar. Zero for identical maps; no gradient reaches the teacher;
    0 (still attached to the student's graph) when no class is present or nothing is kept.
    """
    keep_f = keep.to(student_cam.dtype)
    diff = (normalise_maps(student_cam, keep) - normalise_maps(teacher_cam.detach(), keep)).abs() * keep_f
    per_map = diff.flatten(2).sum(-1) / keep_f.flatten(2).sum(-1).clamp_min(1.0)
    present = (labels > 0).to(per_map.dtype)
    return (per_map * present).sum() / present.sum().clamp_min(1.0)
