"""ClassifierModule: image-level multi-label training with refiner hooks (orchestration only)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from wsss.errors import ConfigError
from wsss.models.classifier import Classifier
from wsss.models.weights import read_checkpoint
from wsss.refiners import build_refiners
from wsss.refiners.base import Refiner, model_family
from wsss.train.metrics import macro_f1, mean_average_precision
from wsss.train.optim import make_optimizer, per_step_scheduler, stage_spans


def attach_refiners(model: Classifier, refiners: Sequence[Refiner], max_steps: int) -> None:
    """Check each refiner supports the backbone family, set its stages from the run length and
    attach it to ``model``, in order. At most one refiner may define several stages."""
    family = model_family(model)
    for refiner in refiners:
        if family not in refiner.families:
            raise ConfigError(f"classifier.refiners: {refiner.name!r} supports {' and '.join(refiner.families)} "
                              f"backbones; {model.config['backbone']!r} is a {family} backbone")
        refiner.configure_stages(max_steps)
        refiner.attach(model)
    staged = [r.name for r in refiners if len(r.stages) > 1]
    if len(staged) > 1:
        raise ConfigError(f"classifier.refiners: {staged} each define a stage schedule; list at most one of them")


def unique_parameters(params: Iterable[nn.Parameter]) -> list[nn.Parameter]:
    seen: set[int] = set()
    out = []
    for p in params:
        if id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out


class ClassifierModule(pl.LightningModule):
    """Trains a :class:`~wsss.models.classifier.Classifier` on image-level labels.

    Loss: multi-label soft margin on the logits (+ ``aux_weight`` x the auxiliary head's, + the
    class-token logits' of a backbone with one class token per class, MCTformer) + every refiner's
    weighted terms. The new layers (heads and refiner modules) learn at
    ``lr * head_lr_mult``; warm-up then poly decay per iteration (restarted at each stage when the
    staged refiner asks for it). Validation logs mAP and macro F1. Refiners are objects (not
    hyper-parameters); ``refiner_configs`` records how they were built, so that
    :func:`load_classifier_checkpoint` can rebuild the trained model with them attached.
    """

    def __init__(self, backbone: str = "resnet18", num_classes: int = 20, pooling: str = "gap",
                 temperature: float = 1.0, aux_layer: int | None = None, aux_weight: float = 1.0,
                 pretrained: bool | str = False, backbone_kwargs: dict[str, Any] | None = None,
                 optimizer: str = "sgd", lr: float = 0.01, weight_decay: float = 1e-4, momentum: float = 0.9,
                 betas: tuple[float, float] = (0.9, 0.999), head_lr_mult: float = 10.0, warmup_steps: int = 0,
                 warmup_ratio: float = 1e-6, max_steps: int = 1000, poly_power: float = 0.9,
                 refiners: list[Refiner] | None = None, refiner_configs: list[dict] | None = None,
                 prior_bias: bool = False):
        super().__init__()
        self.model = Classifier(backbone, num_classes, pooling=pooling, temperature=temperature,
                                aux_layer=aux_layer, pretrained=pretrained, backbone_kwargs=backbone_kwargs,
                                prior_bias=prior_bias)
        self.save_hyperparameters(ignore=["refiners", "pretrained"])
        self.hparams["model_config"] = self.model.config
        self.refiners = nn.ModuleList(refiners or [])
        attach_refiners(self.model, self.refiners, max_steps)
        self._entered: list[str | None] = [None] * len(self.refiners)
        self._val_scores: list[torch.Tensor] = []
        self._val_targets: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def stage_ends(self) -> dict[int, str]:
        """``{step: name}`` of every stage that ends before the last step (the step is the first of
        the next stage); checkpoints are taken there."""
        ends = {}
        for refiner in self.refiners:
            for (name, _), (_, next_first) in zip(refiner.stages, refiner.stages[1:]):
                if 0 < next_first < self.hparams.max_steps:
                    ends[next_first] = name
        return ends

    def _enter_stages(self, step: int) -> None:
        for i, refiner in enumerate(self.refiners):
            name = refiner.stage_at(step)
            if name is not None and name != self._entered[i]:
                refiner.on_stage_start(name, self.model)
                self._entered[i] = name

    def _classification_loss(self, outputs: dict[str, Any], labels: torch.Tensor) -> dict[str, torch.Tensor]:
        terms = {"cls": F.multilabel_soft_margin_loss(outputs["logits"], labels)}
        if outputs["aux_logits"] is not None:
            terms["aux_cls"] = F.multilabel_soft_margin_loss(outputs["aux_logits"], labels)
        if outputs.get("token_logits") is not None:
            terms["token_cls"] = F.multilabel_soft_margin_loss(outputs["token_logits"], labels)
        return terms

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        step = self.global_step
        self._enter_stages(step)
        for refiner in self.refiners:
            batch = {**batch, **refiner.views(batch)}
        outputs = self.model.forward_outputs(batch["image"])
        outputs["model"] = self.model
        terms = self._classification_loss(outputs, batch["label"])
        total = terms["cls"] + self.hparams.aux_weight * terms.get("aux_cls", 0.0) + terms.get("token_cls", 0.0)
        for refiner in self.refiners:
            for name, (weight, value) in refiner.losses(batch, outputs, step).items():
                if weight != 0:
                    terms[name] = value
                    total = total + weight * value
        batch_size = batch["image"].shape[0]
        for name, value in terms.items():
            self.log(f"train/{name}", value, batch_size=batch_size)
        self.log("train/loss", total, prog_bar=True, batch_size=batch_size)
        return total

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        for refiner in self.refiners:
            refiner.on_after_optimizer_step(self.model, self.global_step - 1)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        outputs = self.model.forward_outputs(batch["image"])
        loss = F.multilabel_soft_margin_loss(outputs["logits"], batch["label"])
        self.log("val/loss", loss, batch_size=batch["image"].shape[0], sync_dist=True)
        self._val_scores.append(outputs["logits"].detach().sigmoid().cpu())
        self._val_targets.append(batch["label"].detach().cpu())

    def on_validation_epoch_end(self) -> None:
        if not self._val_scores:
            return
        scores, targets = torch.cat(self._val_scores), torch.cat(self._val_targets)
        self._val_scores.clear()
        self._val_targets.clear()
        self.log("val/mAP", mean_average_precision(scores, targets), prog_bar=True)
        self.log("val/f1", macro_f1(scores, targets))

    def parameter_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(backbone parameters, new parameters). New: the heads, everything a refiner registers
        (also where it placed it inside the backbone) and any other parameter outside the backbone."""
        new = unique_parameters(self.model.new_parameters() + [p for r in self.refiners for p in r.parameters()])
        new_ids = {id(p) for p in new}
        backbone = [p for p in unique_parameters(self.model.backbone_parameters()) if id(p) not in new_ids]
        known = new_ids | {id(p) for p in backbone}
        new += [p for p in unique_parameters(self.model.parameters()) if id(p) not in known]
        return backbone, new

    def trainable_parameter_count(self) -> int:
        backbone, new = self.parameter_groups()
        return sum(p.numel() for p in backbone + new if p.requires_grad)

    def configure_optimizers(self):
        h = self.hparams
        backbone, new = self.parameter_groups()
        optimizer = make_optimizer(h.optimizer, [(backbone, h.lr), (new, h.lr * h.head_lr_mult)],
                                   weight_decay=h.weight_decay, momentum=h.momentum, betas=h.betas)
        starts = None
        if any(r.restart_schedule_per_stage for r in self.refiners):
            starts = [first for r in self.refiners if r.restart_schedule_per_stage for _, first in r.stages]
        scheduler = per_step_scheduler(optimizer, h.max_steps, h.warmup_steps, h.warmup_ratio, h.poly_power,
                                       spans=stage_spans(starts, h.max_steps) if starts else None)
        return {"optimizer": optimizer, "lr_scheduler": scheduler}


def load_classifier_checkpoint(path: str | Path) -> Classifier:
    """The trained classifier of a ``ClassifierModule`` checkpoint, with the refiners it was trained
    with rebuilt, attached and put in their inference state (``Refiner.prepare_inference``).

    The refiners are kept, unregistered, as ``model.attached_refiners`` (their ``refine_cam`` runs at
    CAM export). Loading is ``weights_only``; no pretrained file is read.
    """
    ckpt = read_checkpoint(path, Classifier.checkpoint_kind)
    hparams = ckpt["hyper_parameters"]
    model = Classifier(**hparams["model_config"])
    refiners = build_refiners(hparams.get("refiner_configs") or [])
    attach_refiners(model, refiners, int(hparams.get("max_steps", 0)))
    state = ckpt["state_dict"]
    model.load_state_dict({k[len("model."):]: v for k, v in state.items() if k.startswith("model.")})
    for i, refiner in enumerate(refiners):
        prefix = f"refiners.{i}."
        refiner.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
        refiner.prepare_inference(model)
    model.attached_refiners = list(refiners)
    return model
