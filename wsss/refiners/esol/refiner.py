"""ESOL refiner: expansion and shrinkage of localisation with two deformable samplers on a CNN
(Li et al., NeurIPS 2022; spec ``shared/specs/esol_ppl_excel.md`` section A; no official code).

This module only orchestrates; the samplers are in ``samplers``, the mask and area loss in
``losses`` and the stage boundaries in ``schedule``.

One classifier run, two named stages (``restart_schedule_per_stage``: each stage gets its own
warm-up + poly schedule, as the paper trains each stage like an IRN run):

* ``expansion`` (from step 0): the backbone map goes through the expansion sampler; the
  classification loss trains backbone, sampler kernel and head as usual, while the sampler's
  offset branch gets the reversed gradient, i.e. it maximises the loss and moves the sampling
  points off the most discriminative parts.
* ``shrinkage``: the expansion path (backbone and expansion sampler, parameters and normalisation
  statistics) is frozen; a second, zero-initialised sampler on the expanded map is trained with
  the classification loss plus the area loss (``esol_area``), which shrinks the activated
  fraction of the expanded foreground (CAM of the frozen expansion path and of the head as it was
  when the stage started, thresholded at ``mask_threshold``).

CAMs come from the final model: the classifier head on the output of both samplers
(``prepare_inference`` selects the last configured stage).

Deviation from spec A.4: the spec multiplies the shrinkage sampler's input by the expanded mask.
That needs the image labels at inference, so here the mask only delimits the area loss, and the
sampler sees the whole expanded map in training and at CAM export alike.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from wsss.errors import ConfigError
from wsss.refiners.base import Losses, Refiner
from wsss.refiners.esol.losses import area_loss, expanded_mask
from wsss.refiners.esol.samplers import ExpansionShrinkage
from wsss.refiners.esol.schedule import esol_stages

AREA_REGIONS = ("expanded", "all")


class ESOLRefiner(Refiner):
    """ESOL: an expansion sampler driven by inverse supervision, then a shrinkage sampler with an
    area loss, each a residual deformable 3x3 convolution after the backbone.

    Args:
        expansion_fraction: share of the run's steps given to the expansion stage (0.5: the two
            stages equally long, as IRN's 5 epochs per stage); 1 trains the expansion stage only.
        inverse_weight: ``lambda_exp``, the gradient-reversal coefficient on the expansion offsets
            (1.0). Reconstruction: the paper's inverse supervision realised as gradient reversal.
        max_offset: bound of every offset in feature cells (3.0, ~48 px at stride 16).
            Reconstruction (project default).
        kernel_size: deformable kernel size (3).
        feature_clip: clip each sampler's output to its input's per-channel range (True).
            Reconstruction: the paper's clip operation, whose exact form is not published.
        mask_threshold: ``tau_e``, the expanded-CAM threshold of the shrinkage region (0.3).
            Reconstruction.
        area_weight: weight of the area loss in the shrinkage stage (0.5). Reconstruction.
        area_region: "expanded" (the area loss counts the activated fraction of the expanded
            foreground) or "all" (of the whole map). Reconstruction.
        branch_scale_init: initial BatchNorm scale of each sampler's residual branch (0.0: each stage
            starts exactly from the model before it; 1.0: the usual BatchNorm initialisation, the
            branch active from the first step). Project default.
    """

    name = "esol"
    families = ("cnn",)
    restart_schedule_per_stage = True

    @classmethod
    def demo_entries(cls) -> dict[str, dict[str, Any]]:
        """ESOL on the demo CNN: same budget, data and seed as the plain entry, the 250 steps split
        into 125 expansion and 125 shrinkage steps (``configs/demo/esol_cnn.yaml``)."""
        return {"esol_cnn": {"family": "cnn", "overrides": {"classifier": {"refiners": [{
            "name": "esol", "expansion_fraction": 0.5, "inverse_weight": 1.0, "max_offset": 3.0,
            "feature_clip": True, "mask_threshold": 0.3, "area_weight": 0.5, "area_region": "expanded"}]}}}}

    def __init__(
        self,
        expansion_fraction: float = 0.5,
        inverse_weight: float = 1.0,
        max_offset: float = 3.0,
        kernel_size: int = 3,
        feature_clip: bool = True,
        mask_threshold: float = 0.3,
        area_weight: float = 0.5,
        area_region: str = "expanded",
        branch_scale_init: float = 0.0,
    ):
        super().__init__()
        if inverse_weight < 0:
            raise ConfigError(f"esol: inverse_weight must be >= 0; got {inverse_weight}")
        if max_offset <= 0:
            raise ConfigError(f"esol: max_offset must be > 0; got {max_offset}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ConfigError(f"esol: kernel_size must be odd and >= 1; got {kernel_size}")
        if not 0.0 < mask_threshold < 1.0:
            raise ConfigError(f"esol: mask_threshold must be in (0, 1); got {mask_threshold}")
        if area_region not in AREA_REGIONS:
            raise ConfigError(f"esol: area_region must be one of {AREA_REGIONS}; got {area_region!r}")
        esol_stages(2, expansion_fraction)  # validates the fraction before the run length is known
        self.expansion_fraction = expansion_fraction
        self.inverse_weight = inverse_weight
        self.max_offset = max_offset
        self.kernel_size = kernel_size
        self.feature_clip = feature_clip
        self.mask_threshold = mask_threshold
        self.area_weight = area_weight
        self.area_region = area_region
        self.branch_scale_init = branch_scale_init
        self.stages = [("expansion", 0)]
        self.samplers: ExpansionShrinkage | None = None
        self._frozen: list[nn.Module] = []

    def configure_stages(self, max_steps: int) -> None:
        self.stages = esol_stages(max_steps, self.expansion_fraction)

    def attach(self, model: nn.Module) -> None:
        """Put the samplers in ``model.feature_map`` (the final map the head and the CAM methods
        read) and make room for the head snapshot the shrinkage region is computed with."""
        if not isinstance(getattr(model, "feature_map", None), nn.Identity):
            raise ConfigError("esol: the classifier's final map is already wrapped (feature_map is not an "
                              "identity); list ESOL before the refiner that wraps it, or only one of them")
        channels = model.backbone.final_channels
        self.samplers = ExpansionShrinkage(channels, self.kernel_size, self.max_offset, self.feature_clip,
                                           self.inverse_weight, self.branch_scale_init)
        model.feature_map = self.samplers
        head = model.head.classifier.weight
        self.register_buffer("expansion_head", torch.zeros_like(head))
        self.register_buffer("expansion_head_taken", torch.zeros((), dtype=torch.bool))

    def on_stage_start(self, name: str, model: nn.Module) -> None:
        samplers = self._require_samplers()
        samplers.stage = name
        if name != "shrinkage":
            return
        self._frozen = [model.backbone, samplers.expansion]
        for module in self._frozen:
            module.requires_grad_(False).eval()
        # Taken once, when the stage is entered; a run resumed inside the stage keeps the loaded copy.
        if not bool(self.expansion_head_taken):
            self.expansion_head.copy_(model.head.classifier.weight.detach())
            self.expansion_head_taken.fill_(True)

    def train(self, mode: bool = True) -> ESOLRefiner:
        """Also keeps the frozen expansion path in eval mode (its BatchNorm statistics fixed) when the
        training module switches everything back to training mode."""
        super().train(mode)
        for module in self._frozen:
            module.eval()
        return self

    def losses(self, batch: dict[str, Any], outputs: dict[str, Any], step: int) -> Losses:
        samplers = self._require_samplers()
        if samplers.stage != "shrinkage" or self.area_weight == 0:
            return {}
        model, labels = outputs["model"], batch["label"]
        region = None
        if self.area_region == "expanded":
            with torch.no_grad():
                expanded = samplers.expansion(outputs["backbone"].final)
                region = expanded_mask(nn.functional.conv2d(expanded, self.expansion_head), labels,
                                       self.mask_threshold)
        cams = model.head.cam(outputs["features"])
        return {"esol_area": (self.area_weight, area_loss(cams, labels, region))}

    def prepare_inference(self, model: nn.Module) -> None:
        self._require_samplers().stage = self.stages[-1][0]

    def _require_samplers(self) -> ExpansionShrinkage:
        if self.samplers is None:
            raise ConfigError("esol: hook called before attach(model)")
        return self.samplers
