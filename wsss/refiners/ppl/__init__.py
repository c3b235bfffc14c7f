"""PPL: progressive patch learning (Li et al., IEEE TMM 2022), a reconstruction.

``refiner`` orchestrates; ``patches`` (split and stitch), ``branches`` (upper blocks on patches) and
``schedule`` (stages) hold the maths (spec ``esol_ppl_excel.md`` section B).
"""

from wsss.refiners.ppl.patches import merge, tile
from wsss.refiners.ppl.refiner import PPLRefiner

__all__ = ["PPLRefiner", "merge", "tile"]
