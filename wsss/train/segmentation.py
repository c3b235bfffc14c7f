"""SegmenterModule: a segmentation network trained on (pseudo) masks (orchestration only)."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from wsss.data.palette import IGNORE_INDEX
from wsss.eval.miou import ConfusionMatrix
from wsss.models.segmenter import Segmenter
from wsss.train.optim import make_optimizer, per_step_scheduler


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of logits [B, C, h, w] upsampled to the labels [B, H, W], 255 ignored.

    A batch whose pixels are all ignored gives 0 (with a gradient path), not NaN.
    """
    logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
    valid = target != IGNORE_INDEX
    if not valid.any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX)


class SegmenterModule(pl.LightningModule):
    """Cross-entropy training with a poly schedule and ``head_lr_mult`` x lr on the head; validation
    logs ``val/miou`` from a streaming confusion matrix (full images, batch 1)."""

    def __init__(self, backbone: str = "resnet18", num_classes: int = 21, head: str = "aspp",
                 head_kwargs: dict[str, Any] | None = None, pretrained: bool | str = False,
                 backbone_kwargs: dict[str, Any] | None = None, optimizer: str = "sgd", lr: float = 0.01,
                 momentum: float = 0.9, weight_decay: float = 1e-4, betas: tuple[float, float] = (0.9, 0.999),
                 head_lr_mult: float = 10.0, warmup_steps: int = 0, warmup_ratio: float = 1e-6,
                 max_steps: int = 1000, poly_power: float = 0.9, class_names: list[str] | None = None):
        super().__init__()
        self.model = Segmenter(backbone, num_classes, head=head, pretrained=pretrained, head_kwargs=head_kwargs,
                               backbone_kwargs=backbone_kwargs)
        self.save_hyperparameters(ignore=["pretrained"])
        self.hparams["model_config"] = self.model.config
        self._confusion = ConfusionMatrix(num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss = segmentation_loss(self.model(batch["image"]), batch["mask"])
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["image"].shape[0])
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        logits = self.model.forward_full(batch["image"])
        self.log("val/loss", segmentation_loss(logits, batch["mask"]), batch_size=1, sync_dist=True)
        self._confusion.update(logits.argmax(1), batch["mask"])

    def on_validation_epoch_end(self) -> None:
        matrix = torch.as_tensor(self._confusion.matrix, device=self.device)
        if self.trainer.world_size > 1:
            matrix = self.all_gather(matrix).sum(0)
        self._confusion.matrix = matrix.cpu().numpy()
        self.log("val/miou", self._confusion.compute()["miou"], prog_bar=True, rank_zero_only=True)
        self._confusion = ConfusionMatrix(self.hparams.num_classes)

    def configure_optimizers(self):
        h = self.hparams
        optimizer = make_optimizer(h.optimizer, [(self.model.backbone_parameters(), h.lr),
                                                 (self.model.new_parameters(), h.lr * h.head_lr_mult)],
                                   weight_decay=h.weight_decay, momentum=h.momentum, betas=h.betas)
        return {"optimizer": optimizer,
                "lr_scheduler": per_step_scheduler(optimizer, h.max_steps, h.warmup_steps, h.warmup_ratio, h.poly_power)}
