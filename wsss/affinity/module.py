"""AffinityModule: trains the boundary network on IRN's inter-pixel relations (orchestration only)."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch

from wsss.affinity.losses import affinity_loss, reduce_labels
from wsss.affinity.network import AffinityNet
from wsss.train.optim import make_optimizer, per_step_scheduler


class AffinityModule(pl.LightningModule):
    """Boundary network training: batches of image crops with their confident-region label maps
    (``mask``, 255 = unknown and padding) give the relation labels; poly decay without warm-up (IRN)."""

    def __init__(self, backbone: str = "resnet18", pretrained: bool | str = False,
                 backbone_kwargs: dict[str, Any] | None = None, radius: int = 10, optimizer: str = "sgd",
                 lr: float = 0.1, weight_decay: float = 1e-4, momentum: float = 1e-4,
                 betas: tuple[float, float] = (0.9, 0.999), max_steps: int = 1000, poly_power: float = 0.9):
        super().__init__()
        self.model = AffinityNet(backbone, pretrained=pretrained, backbone_kwargs=backbone_kwargs)
        self.save_hyperparameters(ignore=["pretrained"])
        self.hparams["model_config"] = self.model.config

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        boundary = torch.sigmoid(self.model(batch["image"]))[:, 0]
        labels = reduce_labels(batch["mask"], boundary.shape[-2:])
        terms = affinity_loss(boundary, labels, self.hparams.radius)
        size = batch["image"].shape[0]
        for name, value in terms.items():
            self.log(f"train/{name}", value, prog_bar=name == "total", batch_size=size)
        return terms["total"]

    def configure_optimizers(self):
        h = self.hparams
        optimizer = make_optimizer(h.optimizer, [(self.model.new_parameters(), h.lr)], weight_decay=h.weight_decay,
                                   momentum=h.momentum, betas=h.betas)
        return {"optimizer": optimizer,
                "lr_scheduler": per_step_scheduler(optimizer, h.max_steps, 0, power=h.poly_power)}
