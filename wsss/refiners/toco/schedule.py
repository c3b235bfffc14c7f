"""ToCo loss-weight schedule (spec ``toco_usage_doei.md`` A.6, quirk Q10).

``step`` is the 0-based iteration (the official ``n_iter``; Lightning's ``global_step`` before the
step's optimiser update).

* VOC: PTC and CTC always on; the segmentation loss starts at ``seg_start`` (2000).
* COCO: classification only until ``seg_start`` (8000); then the segmentation loss with labels
  from the **auxiliary** CAM; from ``contrast_start`` (12000) PTC and CTC as well, and segmentation
  labels from the final CAM.

A phase that "starts at X" is, with ``faithful=True`` (official code, ``n_iter <= X`` means off),
on from ``X + 1``; with ``faithful=False`` (default, corrected) on from ``X``.
"""

from __future__ import annotations

from dataclasses import dataclass

from wsss.errors import ConfigError

DEFAULT_STARTS = {"voc": (2000, None), "coco": (8000, 12000)}


@dataclass(frozen=True)
class ToCoWeights:
    """Loss weights at one step; ``seg_cam`` is ``"final"`` or ``"aux"`` (CAM the segmentation
    pseudo-labels come from)."""

    ptc: float
    ctc: float
    seg: float
    seg_cam: str


def phase_started(step: int, start: int | None, faithful: bool = False) -> bool:
    """Whether a phase starting at ``start`` (None = from the beginning) is on at ``step``."""
    if start is None:
        return True
    return step > start if faithful else step >= start


def default_starts(dataset: str) -> tuple[int, int | None]:
    """``(seg_start, contrast_start)`` of the official scripts for ``dataset`` ("voc" or "coco")."""
    if dataset not in DEFAULT_STARTS:
        raise ConfigError(f"toco: dataset must be one of {sorted(DEFAULT_STARTS)}; got {dataset!r}")
    return DEFAULT_STARTS[dataset]


def loss_weights(
    step: int,
    seg_start: int,
    contrast_start: int | None = None,
    ptc_weight: float = 0.2,
    ctc_weight: float = 0.5,
    seg_weight: float = 0.1,
    faithful: bool = False,
) -> ToCoWeights:
    """ToCo loss weights at ``step``.

    Args:
        step: 0-based iteration.
        seg_start: first step of the segmentation loss (VOC 2000, COCO 8000).
        contrast_start: first step of PTC/CTC, None = always on (VOC); COCO 12000. Before it the
            segmentation labels come from the auxiliary CAM.
        ptc_weight, ctc_weight, seg_weight: weights once on.
        faithful: official ``<=`` boundaries (one step late) instead of the corrected ones.
    """
    contrast_on = phase_started(step, contrast_start, faithful)
    seg_on = phase_started(step, seg_start, faithful)
    return ToCoWeights(
        ptc=ptc_weight if contrast_on else 0.0,
        ctc=ctc_weight if contrast_on else 0.0,
        seg=seg_weight if seg_on else 0.0,
        seg_cam="final" if contrast_on else "aux",
    )
