"""CAMs -> label masks: a background threshold, or a high/low pair with an ignore band between."""

from __future__ import annotations

import numpy as np

from wsss.data.palette import IGNORE_INDEX


def cams_to_mask(cams: np.ndarray, class_ids: np.ndarray, bg_threshold: float | None = None,
                 high: float | None = None, low: float | None = None) -> np.ndarray:
    """Label mask uint8 [H, W] from ``cams`` float [K, H, W] in [0, 1] of dataset ids ``class_ids`` [K].

    With ``bg_threshold``: a pixel takes ``class_ids[argmax]`` where the max >= threshold, else 0.
    With ``high``/``low``: max >= high -> class, max < low -> 0, between -> 255 (ignore).
    ``high``/``low`` take precedence when given. K = 0 gives all background.
    """
    cams = np.asarray(cams, dtype=np.float32)
    class_ids = np.asarray(class_ids)
    if (high is None) != (low is None):
        raise ValueError("give both high and low, or neither")
    if high is None and bg_threshold is None:
        raise ValueError("give bg_threshold or high/low")
    if cams.shape[0] == 0:
        return np.zeros(cams.shape[1:], np.uint8)
    best = cams.max(axis=0)
    labels = np.asarray(class_ids, np.uint8)[cams.argmax(axis=0)]
    if high is not None:
        out = np.where(best >= high, labels, np.uint8(IGNORE_INDEX))
        return np.where(best < low, np.uint8(0), out).astype(np.uint8)
    return np.where(best >= bg_threshold, labels, np.uint8(0)).astype(np.uint8)


def scores_with_background(cams: np.ndarray, bg_threshold: float) -> np.ndarray:
    """[1 + K, H, W]: a constant background score ``bg_threshold`` stacked before the CAMs, so that
    argmax reproduces :func:`cams_to_mask` (ties go to the class, as ``>=`` does)."""
    bg = np.full((1, *cams.shape[1:]), bg_threshold, np.float32)
    return np.concatenate([bg, np.asarray(cams, np.float32)], axis=0)
