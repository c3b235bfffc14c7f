"""Pseudo masks: CAM storage, thresholds with an ignore band, dense CRF, the resumable labeler."""

from __future__ import annotations

from wsss.pseudo.crf import cams_to_probs, crf_mask, dense_crf
from wsss.pseudo.storage import load_cams, save_cams
from wsss.pseudo.thresholds import cams_to_mask

__all__ = ["cams_to_mask", "cams_to_probs", "crf_mask", "dense_crf", "load_cams", "save_cams"]
