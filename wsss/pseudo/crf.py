"""Dense CRF refinement (Krähenbühl & Koltun) through pydensecrf2.

Defaults are ToCo/AFA's (``utils/dcrf.py``): 10 mean-field iterations, Gaussian kernel sxy 1 /
compat 1, bilateral kernel sxy 121 / srgb 5 / compat 4.
"""

from __future__ import annotations

import numpy as np

from wsss.data.palette import IGNORE_INDEX
from wsss.pseudo.thresholds import scores_with_background

PROB_FLOOR = 1e-5


def dense_crf(image: np.ndarray, probs: np.ndarray, n_iter: int = 10, gauss_sxy: float = 1, gauss_compat: float = 1,
              bi_sxy: float = 121, bi_srgb: float = 5, bi_compat: float = 4) -> np.ndarray:
    """CRF marginals float32 [C, H, W] for ``image`` uint8 [H, W, 3] and ``probs`` float32 [C, H, W].

    The unary is ``-log(probs)`` (clipped at 1e-5); a compat of 0 drops that pairwise term.
    """
    import pydensecrf.densecrf as dcrf

    c, h, w = probs.shape
    if image.shape[:2] != (h, w):
        raise ValueError(f"image {image.shape[:2]} and probabilities {(h, w)} differ in size")
    d = dcrf.DenseCRF2D(w, h, c)
    unary = -np.log(np.clip(probs, PROB_FLOOR, 1.0)).reshape(c, -1).astype(np.float32)
    d.setUnaryEnergy(np.ascontiguousarray(unary))
    if gauss_compat > 0:
        d.addPairwiseGaussian(sxy=gauss_sxy, compat=gauss_compat)
    if bi_compat > 0:
        rgb = np.require(image, dtype=np.uint8, requirements=["C", "W"])  # pydensecrf needs a writable buffer
        d.addPairwiseBilateral(sxy=bi_sxy, srgb=bi_srgb, rgbim=rgb,
                               compat=bi_compat)
    return np.asarray(d.inference(n_iter), np.float32).reshape(c, h, w)


def cams_to_probs(cams: np.ndarray, bg_threshold: float | None = None, bg_power: float | None = None) -> np.ndarray:
    """[1 + K, H, W] probabilities: CAM scores with a background score (constant threshold or power
    score), normalised to sum 1 (so the CRF's unary alone reproduces the threshold rule)."""
    scores = np.clip(scores_with_background(cams, bg_threshold, bg_power), PROB_FLOOR, None)
    return scores / scores.sum(axis=0, keepdims=True)


def crf_mask(image: np.ndarray, cams: np.ndarray, class_ids: np.ndarray, bg_threshold: float | None = None,
             high: float | None = None, low: float | None = None, bg_power: float | None = None,
             **crf_params) -> np.ndarray:
    """CRF-refined label mask uint8 [H, W]; with ``high``/``low`` the CAM's ignore band stays 255."""
    marginals = dense_crf(image, cams_to_probs(cams, bg_threshold, bg_power), **crf_params)
    lut = np.concatenate([[0], np.asarray(class_ids)]).astype(np.uint8)
    mask = lut[marginals.argmax(axis=0)]
    if high is not None and cams.shape[0] > 0:
        best = cams.max(axis=0)
        mask = np.where((best >= low) & (best < high), np.uint8(IGNORE_INDEX), mask)
    return mask.astype(np.uint8)
