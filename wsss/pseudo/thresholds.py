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


def background_score(cams: np.ndarray, bg_threshold: float | None = None, bg_power: float | None = None) -> np.ndarray:
    """Background score [1, H, W]: the constant ``bg_threshold``, or the PSA/IRN-style power score
    ``(1 - max_k cam_k) ** bg_power`` (large powers shrink the background, small ones grow it)."""
    if bg_power is not None:
        best = cams.max(axis=0) if cams.shape[0] else np.zeros(cams.shape[1:], np.float32)
        return np.power(1.0 - best, bg_power)[None].astype(np.float32)
    if bg_threshold is None:
        raise ValueError("give bg_threshold or bg_power")
    return np.full((1, *cams.shape[1:]), bg_threshold, np.float32)


def scores_with_background(cams: np.ndarray, bg_threshold: float | None = None,
                           bg_power: float | None = None) -> np.ndarray:
    """[1 + K, H, W]: the background score stacked before the CAMs. With a constant threshold,
    argmax reproduces :func:`cams_to_mask` (ties go to the class, as ``>=`` does)."""
    cams = np.asarray(cams, np.float32)
    return np.concatenate([background_score(cams, bg_threshold, bg_power), cams], axis=0)


def power_background_mask(cams: np.ndarray, class_ids: np.ndarray, bg_power: float) -> np.ndarray:
    """Label mask uint8 [H, W]: argmax over ``[(1 - max cam) ** bg_power, cams]`` (ties to the class)."""
    scores = scores_with_background(cams, bg_power=bg_power)
    lut = np.concatenate([[0], np.asarray(class_ids)]).astype(np.uint8)
    flipped = scores[::-1].argmax(axis=0)
    return lut[scores.shape[0] - 1 - flipped]
