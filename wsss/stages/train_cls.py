"""Stage ``train-cls``: train the image-level classifier; ``OUT/classifier/classifier.ckpt``."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint

from wsss.config import RunConfig
from wsss.data.datamodule import WSSSDataModule
from wsss.errors import StageMissingError
from wsss.refiners import build_refiners
from wsss.stages.common import dataset_for, make_trainer, stage
from wsss.train.classification import ClassifierModule

log = logging.getLogger("wsss")


def classifier_ckpt(cfg: RunConfig) -> Path:
    return cfg.out_dir / "classifier" / "classifier.ckpt"


def build_classifier_module(cfg: RunConfig, num_classes: int) -> ClassifierModule:
    """The ClassifierModule of the ``classifier`` section, for ``num_classes`` foreground classes."""
    c = cfg.classifier
    return ClassifierModule(
        backbone=c.backbone, num_classes=num_classes, pooling=c.pooling, temperature=c.temperature,
        aux_layer=c.aux_layer, aux_weight=c.aux_weight, pretrained=c.pretrained,
        backbone_kwargs=dict(c.backbone_kwargs), optimizer=c.optimizer, lr=c.lr, weight_decay=c.weight_decay,
        momentum=c.momentum, head_lr_mult=c.head_lr_mult, warmup_steps=c.warmup_steps, max_steps=c.max_steps,
        refiners=build_refiners(c.refiners), refiner_configs=list(c.refiners),
    )


def save_final_checkpoint(trainer: pl.Trainer, final: Path) -> None:
    """Save on every rank (the call is collective), then publish atomically from rank 0.

    An interrupted fit (signal, Ctrl-C) publishes nothing, so the next run resumes from ``last.ckpt``
    instead of mistaking a partly trained model for a finished one.
    """
    if trainer.interrupted or trainer.global_step < trainer.max_steps:
        raise StageMissingError(f"training stopped at step {trainer.global_step} of {trainer.max_steps}; "
                                f"run the same command again to resume from {final.parent / 'last.ckpt'}")
    tmp = final.with_name(".tmp-" + final.name)
    trainer.save_checkpoint(tmp)
    trainer.strategy.barrier()
    if trainer.is_global_zero:
        os.replace(tmp, final)


def run_train_cls(cfg: RunConfig) -> Path:
    final = classifier_ckpt(cfg)
    out = final.parent
    with stage(cfg.out_dir, "train_cls") as record:
        if final.is_file():
            log.info("classifier checkpoint %s exists: skipping training", final)
            record["skipped"] = True
            return final
        pl.seed_everything(cfg.seed, workers=True)
        train_ds = dataset_for(cfg, cfg.data.train_split)
        module = build_classifier_module(cfg, train_ds.num_classes - 1)
        c = cfg.classifier
        datamodule = WSSSDataModule(
            dataset=cfg.data.name, root=cfg.data.root, train_split=cfg.data.train_split,
            val_split=cfg.data.val_split, task="cls", crop_size=c.crop_size, batch_size=c.batch_size,
            num_workers=cfg.data.num_workers, mean=module.model.mean, std=module.model.std,
            scale_range=tuple(c.scale_range), dataset_kwargs=dict(cfg.data.kwargs), seed=cfg.seed,
        )
        every = max(1, min(200, c.max_steps // 4))
        checkpoint = ModelCheckpoint(dirpath=out, save_last=True, save_top_k=0, every_n_train_steps=every)
        trainer = make_trainer(cfg, out, "classifier", c.max_steps, callbacks=[checkpoint])
        last = out / "last.ckpt"
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(last) if last.is_file() else None)
        save_final_checkpoint(trainer, final)
        record["metrics"] = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    return final
