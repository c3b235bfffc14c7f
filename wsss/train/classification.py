"""ClassifierModule: image-level multi-label training with refiner hooks (orchestration only)."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from wsss.models.classifier import Classifier
from wsss.refiners.base import Refiner
from wsss.train.metrics import macro_f1, mean_average_precision
from wsss.train.optim import make_optimizer, per_step_scheduler


class ClassifierModule(pl.LightningModule):
    """Trains a :class:`~wsss.models.classifier.Classifier` on image-level labels.

    Loss: multi-label soft margin on the logits (+ ``aux_weight`` x the auxiliary head's) + every
    refiner's weighted terms. The new layers (heads and refiner modules) learn at
    ``lr * head_lr_mult``; warm-up then poly decay per iteration. Validation logs mAP and macro F1.
    Refiners are objects (not hyper-parameters); ``refiner_configs`` records how they were built.
    """

    def __init__(self, backbone: str = "resnet18", num_classes: int = 20, pooling: str = "gap",
                 temperature: float = 1.0, aux_layer: int | None = None, aux_weight: float = 1.0,
                 pretrained: bool | str = False, backbone_kwargs: dict[str, Any] | None = None,
                 optimizer: str = "sgd", lr: float = 0.01, weight_decay: float = 1e-4, momentum: float = 0.9,
                 betas: tuple[float, float] = (0.9, 0.999), head_lr_mult: float = 10.0, warmup_steps: int = 0,
                 warmup_ratio: float = 1e-6, max_steps: int = 1000, poly_power: float = 0.9,
                 refiners: list[Refiner] | None = None, refiner_configs: list[dict] | None = None):
        super().__init__()
        self.model = Classifier(backbone, num_classes, pooling=pooling, temperature=temperature,
                                aux_layer=aux_layer, pretrained=pretrained, backbone_kwargs=backbone_kwargs)
        self.save_hyperparameters(ignore=["refiners", "pretrained"])
        self.hparams["model_config"] = self.model.config
        self.refiners = nn.ModuleList(refiners or [])
        for refiner in self.refiners:
            refiner.attach(self.model)
        self._val_scores: list[torch.Tensor] = []
        self._val_targets: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def _classification_loss(self, outputs: dict[str, Any], labels: torch.Tensor) -> dict[str, torch.Tensor]:
        terms = {"cls": F.multilabel_soft_margin_loss(outputs["logits"], labels)}
        if outputs["aux_logits"] is not None:
            terms["aux_cls"] = F.multilabel_soft_margin_loss(outputs["aux_logits"], labels)
        return terms

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        for refiner in self.refiners:
            batch = {**batch, **refiner.views(batch)}
        outputs = self.model.forward_outputs(batch["image"])
        outputs["model"] = self.model
        terms = self._classification_loss(outputs, batch["label"])
        total = terms["cls"] + self.hparams.aux_weight * terms.get("aux_cls", 0.0)
        step = self.global_step
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

    def configure_optimizers(self):
        h = self.hparams
        new = self.model.new_parameters() + [p for r in self.refiners for p in r.parameters()]
        optimizer = make_optimizer(h.optimizer, [(self.model.backbone_parameters(), h.lr),
                                                 (new, h.lr * h.head_lr_mult)],
                                   weight_decay=h.weight_decay, momentum=h.momentum, betas=h.betas)
        scheduler = per_step_scheduler(optimizer, h.max_steps, h.warmup_steps, h.warmup_ratio, h.poly_power)
        return {"optimizer": optimizer, "lr_scheduler": scheduler}
