"""DOEI: dual optimisation of embedding information (Zhu et al., arXiv 2502.15885), a reconstruction.

``refiner`` orchestrates (hooks on the last ViT blocks); ``block`` is the per-block operator and
``ops`` the parameter-free maths (spec ``toco_usage_doei.md`` section C).
"""

from wsss.refiners.doei.ops import decouple_rows, hybrid_affinity, patch_decoupling
from wsss.refiners.doei.refiner import DOEIRefiner

__all__ = ["DOEIRefiner", "decouple_rows", "hybrid_affinity", "patch_decoupling"]
