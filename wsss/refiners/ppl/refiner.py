"""PPL refiner: progressive patch learning (Li et al., IEEE TMM 2022, arXiv 2209.07828; spec
``shared/specs/esol_ppl_excel.md`` section B). The paper has no code; everything past the idea
(B.1) is a reconstruction.

Each training step, on top of the classification loss of the unsplit network, one or more *patch
branches* split the backbone's map after block ``split`` into a ``g x g`` grid, run the blocks
above on every patch independently (all patches folded into the batch; :mod:`.branches`), stitch
the results and classify them with the shared head (``ppl_patch``); the stitched maps are also
fused with the unsplit final map and classified (``ppl_fused``).

* ``variant: implicit`` (progressive): one refiner stage per ``split_blocks`` entry, trained one
  after another in the same run, each starting from the previous stage's weights (the split moves
  one block deeper each stage with the default ``(-4, -3, -2)``). Stages are derived from the step,
  so a resumed run continues in the stage it stopped in.
* ``variant: explicit``: every branch at once, their inputs detached (stop-gradient: the patch
  losses train only the shared upper blocks and the head), all fused before the classifier.

The CAM network is the unsplit one (spec B.3: CAMs with ``g = 1``), so nothing changes at
inference; with a 1 x 1 grid a branch computes exactly the unsplit map.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from wsss.errors import ConfigError
from wsss.refiners.base import Losses, Refiner
from wsss.refiners.ppl.branches import PatchBranches
from wsss.refiners.ppl.schedule import implicit_stages, per_branch, stage_name

VARIANTS = ("implicit", "explicit")
FUSIONS = ("mean", "sum")


def fuse(maps: Sequence[torch.Tensor], fusion: str = "mean") -> torch.Tensor:
    """Fuse same-shaped maps [B, D, h, w] by their mean or sum -> [B, D, h, w]."""
    total = torch.stack(list(maps)).sum(dim=0)
    return total / len(maps) if fusion == "mean" else total


class PPLRefiner(Refiner):
    """Progressive patch learning.

    Args:
        variant: "implicit" (progressive stages, default) or "explicit" (all branches in parallel).
        split_blocks: indices into ``BackboneOutput.features`` after which a branch splits (negative
            counts from the end; each must leave a block above it): the stages of the implicit
            variant in order, the branches of the explicit one. Default ``(-4, -3, -2)``: after
            ResNet ``layer1``, ``layer2``, ``layer3``; after the fourth-, third- and second-last ViT
            block. [UNVERIFIED] reconstruction (spec B.3 splits before ``layer3`` and/or
            ``layer4``; the paper's split points are not recovered).
        grids: patch grid ``g`` per branch, or one int for all. Default 2. [UNVERIFIED]
            reconstruction (spec B.3 names granularities 4, 2, 1; ``split_blocks: [-2, -2, -2]``
            with ``grids: [4, 2, 1]`` is the spec's fixed-depth, fine-to-coarse schedule).
        patch_weight: weight of the sum over branches of their classification losses. [UNVERIFIED]
            reconstruction (spec B.3: ``sum_g L_cls(g)``, weight 1).
        fused_weight: weight of the classification loss of the fused map. [UNVERIFIED]
            reconstruction (spec B.3: ``L_cls(fused)``, weight 1).
        fusion: "mean" or "sum" of the unsplit map and the branch maps. [UNVERIFIED]
            reconstruction (spec B.3: "summing/concatenating"; the mean keeps the logit scale of
            the shared head).
        stop_gradient: detach the branch inputs, so the patch losses do not reach the blocks below
            the split. None = the variant's rule (explicit: yes, implicit: no). [UNVERIFIED]
            reconstruction.
        restart_schedule: restart the learning-rate warm-up + poly at each implicit stage (each
            stage trained like a run of its own, spec B.3 "each stage E_s epochs"). [UNVERIFIED]
            reconstruction.
    """

    name = "ppl"
    families = ("cnn", "vit")

    @classmethod
    def demo_entries(cls) -> dict[str, dict[str, Any]]:
        """Both variants on the demo CNN and ViT, the paper-shaped defaults
        (``configs/demo/ppl_*.yaml``)."""
        entries = {}
        for family in ("cnn", "vit"):
            for variant, suffix in (("implicit", ""), ("explicit", "_explicit")):
                refiner = {"name": "ppl", "variant": variant, "split_blocks": [-4, -3, -2], "grids": 2}
                entries[f"ppl_{family}{suffix}"] = {"family": family,
                                                     "overrides": {"classifier": {"refiners": [refiner]}}}
        return entries

    def __init__(
        self,
        variant: str = "implicit",
        split_blocks: Sequence[int] = (-4, -3, -2),
        grids: int | Sequence[int] = 2,
        patch_weight: float = 1.0,
        fused_weight: float = 1.0,
        fusion: str = "mean",
        stop_gradient: bool | None = None,
        restart_schedule: bool = True,
    ):
        super().__init__()
        if variant not in VARIANTS:
            raise ConfigError(f"ppl: variant must be one of {VARIANTS}; got {variant!r}")
        if fusion not in FUSIONS:
            raise ConfigError(f"ppl: fusion must be one of {FUSIONS}; got {fusion!r}")
        if not split_blocks:
            raise ConfigError("ppl: split_blocks needs at least one entry")
        self.variant = variant
        self.split_blocks = tuple(int(s) for s in split_blocks)
        self.grids = per_branch(grids, len(self.split_blocks))
        self.patch_weight, self.fused_weight = patch_weight, fused_weight
        self.fusion = fusion
        self.stop_gradient = (variant == "explicit") if stop_gradient is None else stop_gradient
        self.restart_schedule_per_stage = variant == "implicit" and restart_schedule
        self.stages = [("explicit", 0)] if variant == "explicit" else implicit_stages(len(self.split_blocks), 0)
        self.branches: PatchBranches | None = None

    def configure_stages(self, max_steps: int) -> None:
        if self.variant == "implicit":
            self.stages = implicit_stages(len(self.split_blocks), max_steps)

    def attach(self, model: nn.Module) -> None:
        """Check the split points against ``model.backbone``; adds no parameters (the branches run
        the backbone's own upper blocks and the classifier's head)."""
        branches = PatchBranches(model.backbone)
        self.split_blocks = tuple(branches.normalise(s) for s in self.split_blocks)
        self.branches = branches

    def active(self, step: int) -> list[tuple[int, int]]:
        """``[(split, grid)]`` of the branches trained at ``step``."""
        pairs = list(zip(self.split_blocks, self.grids))
        if self.variant == "explicit":
            return pairs
        names = [stage_name(k) for k in range(len(pairs))]
        return [pairs[names.index(self.stage_at(step))]]

    def branch_maps(self, outputs: dict[str, Any], step: int) -> list[torch.Tensor]:
        """Stitched final maps [B, D, h, w] of the branches active at ``step``, through the
        classifier's ``feature_map`` like the unsplit map."""
        if self.branches is None:
            raise ConfigError("ppl: losses() called before attach(model)")
        model, out = outputs["model"], outputs["backbone"]
        return [model.feature_map(self.branches(out, split, grid, detach=self.stop_gradient))
                for split, grid in self.active(step)]

    def losses(self, batch: dict[str, Any], outputs: dict[str, Any], step: int) -> Losses:
        head, labels = outputs["model"].head, batch["label"]
        maps = self.branch_maps(outputs, step)
        terms: Losses = {}
        if self.patch_weight:
            patch = sum(F.multilabel_soft_margin_loss(head(m), labels) for m in maps)
            terms["ppl_patch"] = (self.patch_weight, patch)
        if self.fused_weight:
            fused = fuse([outputs["features"], *maps], self.fusion)
            terms["ppl_fused"] = (self.fused_weight, F.multilabel_soft_margin_loss(head(fused), labels))
        return terms
