"""The refiner plug-in interface (see ``shared/design/ARCHITECTURE.md``, "Refiner").

A refiner implements only the hooks it needs; the default of every hook does nothing, so
:class:`Refiner` itself is the no-op refiner. Modules call the hooks of every configured refiner in
order:

* ``configure_stages(max_steps)`` once, before ``attach``: a refiner with a schedule of named stages
  sets ``stages`` here from the run length.
* ``attach(model)`` once, after the model is built: add or wrap modules. Parameters it adds are
  registered on the refiner (an ``nn.Module``) and get the head learning rate, even when the
  refiner also places them inside ``model`` (e.g. wrapping a backbone block).
* ``on_stage_start(name, model)`` at the first training step of each stage (also the first step
  after a resume, with the stage that step falls in): freeze or switch parts for that stage.
* ``views(batch)`` each training step before the forward: return extra inputs (dict) merged into
  the batch, e.g. ToCo's local crops.
* ``losses(batch, outputs, step)`` after the forward: return ``{name: (weight, loss)}``; the module
  adds ``weight * loss`` to the total and logs each term. A term whose weight is 0 at this step is
  left out rather than multiplied by zero (0 x NaN would poison the step).
* ``on_after_optimizer_step(model, step)``: updates that must follow the optimiser (EMA teachers).
* ``prepare_inference(model)`` after a trained classifier is rebuilt from its checkpoint for CAMs:
  put the attached parts in their inference state (last stage, inference-time switches).
* ``refine_cam(cams, batch, outputs)`` at CAM export: post-process ``cams`` [B, K, H, W].

Class attributes:

* ``families``: the backbone families the refiner supports (``"cnn"``, ``"vit"``); a classifier of
  another family is refused with an error, and ``wsss compare --preset refiners`` runs the refiner
  once per family it lists.
* ``stages``: ordered ``(name, first_step)``; the first stage starts at step 0.
* ``restart_schedule_per_stage``: the learning-rate warm-up + poly schedule starts again at each
  stage (each stage is trained like a run of its own length).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

Losses = dict[str, tuple[float, torch.Tensor]]

FAMILIES = ("cnn", "vit")


def model_family(model: nn.Module) -> str:
    """``"vit"`` for a classifier (or backbone) with a token backbone, else ``"cnn"``."""
    backbone = getattr(model, "backbone", model)
    return "vit" if getattr(backbone, "is_vit", False) else "cnn"


class Refiner(nn.Module):
    """No-op refiner and base class of all refiners."""

    name = "none"
    families: tuple[str, ...] = FAMILIES
    stages: list[tuple[str, int]] = []
    restart_schedule_per_stage = False

    @classmethod
    def demo_entries(cls) -> dict[str, dict[str, Any]]:
        """Entries of ``wsss compare --preset refiners``: ``{entry name: {"family": "cnn" | "vit",
        "overrides": {section: {field: value}}}}``, each applied on top of the plain demo config of
        its family (:mod:`wsss.compare.presets`). ``configs/demo/<entry name>.yaml`` spells each out."""
        return {}

    def configure_stages(self, max_steps: int) -> None:
        return None

    def attach(self, model: nn.Module) -> None:
        return None

    def on_stage_start(self, name: str, model: nn.Module) -> None:
        return None

    def views(self, batch: dict[str, Any]) -> dict[str, Any]:
        return {}

    def losses(self, batch: dict[str, Any], outputs: dict[str, Any], step: int) -> Losses:
        return {}

    def on_after_optimizer_step(self, model: nn.Module, step: int) -> None:
        return None

    def prepare_inference(self, model: nn.Module) -> None:
        return None

    def refine_cam(self, cams: torch.Tensor, batch: dict[str, Any], outputs: dict[str, Any]) -> torch.Tensor:
        return cams

    def stage_at(self, step: int) -> str | None:
        """Name of the stage ``step`` falls in (the last stage whose first step is <= step)."""
        current = None
        for name, first in self.stages:
            if step >= first:
                current = name
        return current
