"""Stage ``train-cls``: train the image-level classifier; ``OUT/classifier/classifier.ckpt``."""

from __future__ import annotations

import logging
from pathlib import Path

import pytorch_lightning as pl

from wsss.config import RunConfig
from wsss.models.weights import checkpoint_file_ok
from wsss.refiners import build_refiners
from wsss.stages.common import datamodule_for, dataset_for
from wsss.stages.fingerprint import Fingerprint, stage_fingerprint
from wsss.stages.records import finished_record, stage
from wsss.stages.training import fit_resumable
from wsss.train.classification import ClassifierModule

log = logging.getLogger("wsss")


def classifier_ckpt(cfg: RunConfig) -> Path:
    return cfg.out_dir / "classifier" / "classifier.ckpt"


def train_cls_fingerprint(cfg: RunConfig) -> Fingerprint:
    return stage_fingerprint(cfg, "train_cls")


def build_classifier_module(cfg: RunConfig, num_classes: int) -> ClassifierModule:
    """The ClassifierModule of the ``classifier`` section, for ``num_classes`` foreground classes."""
    c = cfg.classifier
    return ClassifierModule(
        num_classes=num_classes, pooling=c.pooling, temperature=c.temperature, aux_layer=c.aux_layer,
        aux_weight=c.aux_weight, refiners=build_refiners(c.refiners), refiner_configs=list(c.refiners),
        prior_bias=c.prior_bias,
        **c.module_kwargs(),
    )


def run_train_cls(cfg: RunConfig) -> Path:
    """Train (or resume) the classifier; the validation mAP of the final model (validated after the
    last step) and the trainable parameter count go into the stage record."""
    final = classifier_ckpt(cfg)
    fingerprint = train_cls_fingerprint(cfg)
    if finished_record(cfg.out_dir, "train_cls", fingerprint,
                       lambda: [] if checkpoint_file_ok(final) else [final]) is not None:
        return final
    with stage(cfg.out_dir, "train_cls", fingerprint) as record:
        pl.seed_everything(cfg.seed, workers=True)
        train_ds = dataset_for(cfg, cfg.data.train_split)
        module = build_classifier_module(cfg, train_ds.num_classes - 1)
        record["trainable_params"] = module.trainable_parameter_count()
        c = cfg.classifier
        datamodule = datamodule_for(cfg, c, "cls", module.model.mean, module.model.std)
        trainer = fit_resumable(cfg, module, datamodule, final, "classifier", c.max_steps,
                                checkpoint_every=max(1, min(200, c.max_steps // 4)))
        record["metrics"] = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    return final
