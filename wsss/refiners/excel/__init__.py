"""ExCEL (Yang et al., CVPR 2025) and its baseline CLIP-ES (Lin et al., CVPR 2023): training-free CAMs
from frozen CLIP towers (spec ``esol_ppl_excel.md`` sections C and D).

Both are CAM methods that bring their own model (:class:`~wsss.cams.base.CamMethod` with
``build_model``), not classifier refiners: ``wsss cams --cams.method excel`` (or ``clip_es``) builds
the CLIP towers from the ``clip`` config section, and ``wsss pseudo`` turns the CAMs into masks; no
classifier is trained. :mod:`wsss.refiners` registers them in :data:`wsss.cams.CAM_METHODS`.
"""

from __future__ import annotations

from wsss.refiners.excel.affinity import affinity_refine, box_mask, transition_matrix
from wsss.refiners.excel.methods import CLIP_ES, EXCEL, ClipCamModel, build_clip_cam_model
from wsss.refiners.excel.surgery import calibrated_attention, surgery_cam, surgery_scores
from wsss.refiners.excel.text import attribute_bank, enrich_text, load_class_texts, text_embeddings

CLIP_CAM_METHODS = (EXCEL, CLIP_ES)

__all__ = ["CLIP_CAM_METHODS", "CLIP_ES", "EXCEL", "ClipCamModel", "affinity_refine", "attribute_bank",
           "box_mask", "build_clip_cam_model", "calibrated_attention", "enrich_text", "load_class_texts",
           "surgery_cam", "surgery_scores", "text_embeddings", "transition_matrix"]
