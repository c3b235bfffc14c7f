"""ESOL: expansion and shrinkage of localisation with deformable samplers (Li et al., NeurIPS 2022).

``refiner`` orchestrates; ``samplers`` (deformable samplers, gradient reversal, feature clip),
``losses`` (expanded mask, area loss) and ``schedule`` (the two stages) hold the modules and the maths
(spec ``esol_ppl_excel.md`` section A).
"""

from wsss.refiners.esol.losses import area_loss, expanded_mask
from wsss.refiners.esol.refiner import ESOLRefiner
from wsss.refiners.esol.samplers import DeformableSampler, ExpansionShrinkage, scale_gradient

__all__ = ["DeformableSampler", "ESOLRefiner", "ExpansionShrinkage", "area_loss", "expanded_mask", "scale_gradient"]
