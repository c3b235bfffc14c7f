"""The refiner plug-in interface (see ``shared/design/ARCHITECTURE.md``, "Refiner").

A refiner implements only the hooks it needs; the default of every hook does nothing, so
:class:`Refiner` itself is the no-op refiner. Modules call the hooks of every configured refiner in
order:

* ``attach(model)`` once, after the model is built: add or wrap modules. Parameters it adds are
  registered on the refiner (an ``nn.Module``) and get the head learning rate.
* ``views(batch)`` each training step before the forward: return extra inputs (dict) merged into
  the batch, e.g. ToCo's local crops.
* ``losses(batch, outputs, step)`` after the forward: return ``{name: (weight, loss)}``; the module
  adds ``weight * loss`` to the total and logs each term. A term whose weight is 0 at this step is
  left out rather than multiplied by zero (0 x NaN would poison the step).
* ``on_after_optimizer_step(model, step)``: updates that must follow the optimiser (EMA teachers).
* ``refine_cam(cams, batch, outputs)`` at CAM inference: post-process ``cams`` [B, K, H, W].
* ``stages``: optional ordered list of ``(name, first_step)`` the module logs and refiners read.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

Losses = dict[str, tuple[float, torch.Tensor]]


class Refiner(nn.Module):
    """No-op refiner and base class of all refiners."""

    name = "none"
    stages: list[tuple[str, int]] = []

    def attach(self, model: nn.Module) -> None:
        return None

    def views(self, batch: dict[str, Any]) -> dict[str, Any]:
        return {}

    def losses(self, batch: dict[str, Any], outputs: dict[str, Any], step: int) -> Losses:
        return {}

    def on_after_optimizer_step(self, model: nn.Module, step: int) -> None:
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
