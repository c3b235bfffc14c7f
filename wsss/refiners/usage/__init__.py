"""USAGE-style seed generation: a temperature-controlled generation loss and a teacher/student
consistency on views with the most-activated regions dropped (reconstruction of arXiv 2303.07806).

``refiner`` orchestrates; ``pooling``, ``consistency`` and ``views`` hold the maths (spec
``toco_usage_doei.md`` section B).
"""

from wsss.refiners.usage.consistency import consistency_loss, normalise_maps, top_activation_keep
from wsss.refiners.usage.pooling import family_temperature, generation_loss, temperature_pool
from wsss.refiners.usage.refiner import UsageRefiner

__all__ = ["UsageRefiner", "consistency_loss", "family_temperature", "generation_loss", "normalise_maps",
           "temperature_pool", "top_activation_keep"]
