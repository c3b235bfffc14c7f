"""Affinity refinement of CAMs: PAR (training-free, colour affinities) and IRN's inter-pixel relations
(a boundary network trained on relations drawn from the CAMs' confident regions, then a random walk)."""

from __future__ import annotations

from wsss.affinity.labels import confident_labels
from wsss.affinity.par import par_cams, par_refine
from wsss.affinity.paths import PairGrid
from wsss.affinity.random_walk import random_walk

__all__ = ["PairGrid", "confident_labels", "par_cams", "par_refine", "random_walk"]
