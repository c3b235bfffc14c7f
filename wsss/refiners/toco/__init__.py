"""ToCo: patch and class token contrast with a jointly trained decoder (Ru et al., CVPR 2023).

``refiner`` orchestrates; ``losses``, ``labels``, ``crops``, ``schedule`` and ``heads`` hold the maths
and the modules (spec ``toco_usage_doei.md`` section A).
"""

from wsss.refiners.toco.losses import ctc_loss, ptc_loss
from wsss.refiners.toco.refiner import ToCoRefiner

__all__ = ["ToCoRefiner", "ctc_loss", "ptc_loss"]
