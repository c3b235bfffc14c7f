"""USAGE-style seed generation refiner (after Peng et al., "USAGE: A Unified Seed Area Generation
Paradigm for WSSS", arXiv 2303.07806; spec ``shared/specs/toco_usage_doei.md`` section B).

No code of the paper is public and only its abstract could be read here, so everything below is a
reconstruction of the two terms the abstract names; each choice it does not state is a constructor
field (with the spec's default where the spec gives one) and says so:

* ``usage_gen`` (generation loss): multi-label soft margin on the CAM pooled by a temperature-
  controlled softmax over positions (:func:`~wsss.refiners.usage.pooling.temperature_pool`). The
  temperature follows a deterministic rule on the network type: higher for CNNs (spread the
  under-activated seeds), lower for ViTs (shrink the over-activated ones).
* ``usage_cons`` (regularisation): an EMA teacher (a copy of the classifier, no gradient, updated
  after each optimiser step) sees the training input; the student (the classifier being trained)
  sees the same input with the teacher's most-activated regions erased, flipped and optionally
  rescaled. The student's CAM, mapped back to the teacher's frame, must match the teacher's
  spatial activation distribution over the kept positions, so the student has to find the rest of
  the object without its most discriminative part, guided by a smoothed copy of itself.

Both terms are added to the classifier's own loss (its head's pooling is unchanged). The teacher
copies the classifier as it is when this refiner is attached: list ``usage`` after any refiner that
wraps or adds modules inside the model. The same config keys serve CNN and ViT backbones.

Batch keys read: ``image`` [B, 3, H, W], ``label`` [B, C]. Outputs read: ``model`` (the
Classifier) and ``features`` [B, D, h, w] (the map the head reads).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from wsss.errors import ConfigError
from wsss.refiners.base import Losses, Refiner, model_family
from wsss.refiners.toco.heads import ema_update
from wsss.refiners.usage.consistency import consistency_loss, top_activation_keep
from wsss.refiners.usage.pooling import family_temperature, generation_loss
from wsss.refiners.usage.views import map_back, student_view


class UsageRefiner(Refiner):
    """USAGE-style generation loss + teacher/student consistency for CNN and ViT classifiers.

    Args:
        temperature: generation temperature; None = the family rule (``cnn_temperature`` or
            ``vit_temperature``). Set it to override the rule.
        cnn_temperature, vit_temperature: the rule's values, 1.0 and 0.1 (spec proj-default;
            reconstruction, the paper's values were not available).
        relative_temperature: the temperature is in units of each map's range (``max - min``,
            detached) rather than of the raw CAM (reconstruction, a project choice that departs
            from the spec's ``softmax(M / tau)``, which ``false`` restores). On raw CAMs the same
            ``tau`` means max pooling for a network with large logits and mean pooling for one with
            small logits, so the family rule would depend on the logit scale; on the demo CNN (SGD,
            GAP head) raw ``tau = 1`` is near max pooling and its loss diverged.
        generation_weight: weight of ``usage_gen`` (reconstruction: 1.0).
        consistency_weight: weight of ``usage_cons`` (spec proj-default 1.0); 0 turns the
            teacher/student branch off.
        consistency_start: fraction of the run (``max_steps``) before ``usage_cons`` starts
            (reconstruction: 0.0), so that the teacher can first learn something to be consistent
            with; a fraction keeps one config right for any budget.
        momentum: EMA momentum of the teacher, ``theta_t <- m theta_t + (1 - m) theta_s``
            (reconstruction: 0.99).
        drop_threshold: a position is dropped from the student's view where the teacher's map of a
            present class reaches this fraction of its maximum (reconstruction: 0.7, ToCo's
            confident-foreground threshold).
        view_flip: the student's view is horizontally flipped (the spec's second view is a
            flipped/scaled copy; reconstruction: True).
        view_scale: the student's view is resized by this factor (reconstruction: 1.0).
    """

    name = "usage"
    families = ("cnn", "vit")

    @classmethod
    def demo_entries(cls) -> dict[str, dict[str, Any]]:
        """USAGE-style on the demo CNN and ViT, the consistency term after the first fifth of each
        run (``configs/demo/usage_cnn.yaml``, ``usage_vit.yaml``). The CNN trains with SGD, where the
        generation term at weight 1 doubles the head's step: its loss climbed to 1.9 where the plain
        run's peaked at 1.2 (steps 20-60); at 0.5 it follows the plain run."""
        return {
            "usage_cnn": {"family": "cnn", "overrides": {"classifier": {"refiners": [
                {"name": "usage", "consistency_start": 0.2, "generation_weight": 0.5}]}}},
            "usage_vit": {"family": "vit", "overrides": {"classifier": {"refiners": [
                {"name": "usage", "consistency_start": 0.2}]}}},
        }

    def __init__(
        self,
        temperature: float | None = None,
        cnn_temperature: float = 1.0,
        vit_temperature: float = 0.1,
        relative_temperature: bool = True,
        generation_weight: float = 1.0,
        consistency_weight: float = 1.0,
        consistency_start: float = 0.0,
        momentum: float = 0.99,
        drop_threshold: float = 0.7,
        view_flip: bool = True,
        view_scale: float = 1.0,
    ):
        super().__init__()
        for label, value in (("temperature", temperature), ("cnn_temperature", cnn_temperature),
                             ("vit_temperature", vit_temperature)):
            if value is not None and value <= 0:
                raise ConfigError(f"usage: {label} must be > 0; got {value}")
        if not 0.0 <= momentum <= 1.0:
            raise ConfigError(f"usage: momentum must be in [0, 1]; got {momentum}")
        if not 0.0 < drop_threshold <= 1.0:
            raise ConfigError(f"usage: drop_threshold must be in (0, 1]; got {drop_threshold}")
        if not 0.0 <= consistency_start <= 1.0:
            raise ConfigError(f"usage: consistency_start is a fraction of the run, in [0, 1]; got {consistency_start}")
        if view_scale <= 0:
            raise ConfigError(f"usage: view_scale must be > 0; got {view_scale}")
        self.temperature_override = temperature
        self.cnn_temperature, self.vit_temperature = cnn_temperature, vit_temperature
        self.relative_temperature = relative_temperature
        self.generation_weight, self.consistency_weight = generation_weight, consistency_weight
        self.consistency_start = consistency_start
        self.consistency_first_step = 0
        self.momentum = momentum
        self.drop_threshold = drop_threshold
        self.view_flip, self.view_scale = view_flip, view_scale
        self.temperature: float | None = None
        self.teacher: nn.Module | None = None

    def configure_stages(self, max_steps: int) -> None:
        """No stages; fixes the first step of the consistency term from the run length."""
        self.consistency_first_step = int(round(self.consistency_start * max_steps))

    def attach(self, model: nn.Module) -> None:
        """Fix the temperature from the backbone family and, when the consistency term is on, copy
        ``model`` (a :class:`~wsss.models.classifier.Classifier`) as the EMA teacher (frozen)."""
        family = model_family(model)
        self.temperature = (self.temperature_override if self.temperature_override is not None
                            else family_temperature(family, self.cnn_temperature, self.vit_temperature))
        if self.consistency_weight != 0:
            self.teacher = copy.deepcopy(model).requires_grad_(False).eval()

    def losses(self, batch: dict[str, Any], outputs: dict[str, Any], step: int) -> Losses:
        if self.temperature is None:
            raise ConfigError("usage: losses() called before attach(model)")
        model = outputs["model"]
        images, labels = batch["image"], batch["label"]
        terms: Losses = {}
        if self.generation_weight != 0:
            cam = model.head.cam(outputs["features"])
            terms["usage_gen"] = (self.generation_weight, generation_loss(cam, labels, self.temperature,
                                                                            self.relative_temperature))
        if self.teacher is not None and step >= self.consistency_first_step:
            terms["usage_cons"] = (self.consistency_weight, self._consistency(model, images, labels))
        return terms

    def _consistency(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        # ``train()`` on the module tree recurses into the teacher; its normalisation layers must use
        # the running statistics EMA copies from the student, never the batch's.
        self.teacher.eval()
        with torch.no_grad():
            teacher_cam = self.teacher.cam(images)
            keep = top_activation_keep(teacher_cam, labels, self.drop_threshold)
        view = student_view(images, keep, self.view_flip, self.view_scale, model.backbone.stride)
        student_cam = map_back(model.cam(view), tuple(teacher_cam.shape[-2:]), self.view_flip)
        return consistency_loss(student_cam, teacher_cam, labels, keep)

    def on_after_optimizer_step(self, model: nn.Module, step: int) -> None:
        if self.teacher is not None:
            ema_update(self.teacher, model, self.momentum)
