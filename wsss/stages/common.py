"""What every stage needs: datasets from the config, a Lightning trainer, loggers, stage bookkeeping."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint

from wsss.config import NetworkTrainingConfig, RunConfig
from wsss.data import build_dataset
from wsss.data.base import SegDataset
from wsss.data.datamodule import WSSSDataModule
from wsss.errors import ConfigError, StageMissingError
from wsss.io import TMP_PREFIX, atomic_write_json

log = logging.getLogger("wsss")

STAGES_FILE = "stages.json"


def dataset_for(cfg: RunConfig, split: str, mask_dir: str | Path | None = None) -> SegDataset:
    """The configured dataset's ``split`` (masks read from ``mask_dir`` when given)."""
    kwargs = dict(cfg.data.kwargs)
    if cfg.data.skip_bad_images:
        kwargs["skip_bad_images"] = True
    if mask_dir is not None:
        kwargs["mask_dir"] = str(mask_dir)
    return build_dataset(cfg.data.name, cfg.data.root, split, **kwargs)


def make_loggers(cfg: RunConfig, save_dir: Path, name: str) -> list:
    loggers = []
    for kind in cfg.trainer.loggers:
        if kind == "csv":
            loggers.append(pl.loggers.CSVLogger(save_dir, name="csv", version=""))
        elif kind == "tensorboard":
            loggers.append(pl.loggers.TensorBoardLogger(save_dir, name="tensorboard", version=""))
        elif kind == "wandb":
            loggers.append(pl.loggers.WandbLogger(project=cfg.trainer.wandb_project, name=name,
                                                  save_dir=str(save_dir)))
        else:
            raise ConfigError(f"trainer.loggers: unknown logger {kind!r}; choose from csv, tensorboard, wandb")
    return loggers


def datamodule_for(cfg: RunConfig, section: NetworkTrainingConfig, task: str, mean, std,
                   mask_dir: str | Path | None = None) -> WSSSDataModule:
    """Loaders of the configured dataset with the crop, batch and rescale settings of ``section``."""
    return WSSSDataModule(
        dataset=cfg.data.name, root=cfg.data.root, train_split=cfg.data.train_split,
        val_split=cfg.data.val_split, task=task, crop_size=section.crop_size, batch_size=section.batch_size,
        num_workers=cfg.data.num_workers, mean=mean, std=std, scale_range=tuple(section.scale_range),
        dataset_kwargs=dict(cfg.data.kwargs), seed=cfg.seed, mask_dir=str(mask_dir) if mask_dir is not None else None,
    )


def make_trainer(cfg: RunConfig, save_dir: Path, name: str, max_steps: int, callbacks: list | None = None,
                 validate: bool = True) -> pl.Trainer:
    """A Trainer for a training stage; devices, strategy and precision come from ``cfg.trainer``.

    ``validate=False`` skips Lightning's validation loop (the stage evaluates once at the end instead).
    """
    t = cfg.trainer
    kwargs: dict[str, Any] = dict(
        accelerator=t.accelerator, devices=t.devices, strategy=t.strategy, num_nodes=t.num_nodes,
        precision=t.precision, max_steps=max_steps, max_epochs=-1, logger=make_loggers(cfg, save_dir, name),
        callbacks=callbacks or [], default_root_dir=str(save_dir), log_every_n_steps=t.log_every_n_steps,
        deterministic=t.deterministic, enable_progress_bar=cfg.progress, enable_model_summary=False,
        num_sanity_val_steps=0, limit_val_batches=None if validate else 0,
    )
    return pl.Trainer(**kwargs)


def fit_resumable(cfg: RunConfig, module: pl.LightningModule, datamodule: pl.LightningDataModule, final: Path,
                  name: str, max_steps: int, checkpoint_every: int, validate: bool = True) -> pl.Trainer:
    """Train ``module`` for ``max_steps``, resuming from ``final.parent/last.ckpt`` (saved every
    ``checkpoint_every`` steps), and publish the finished model as ``final``."""
    out = final.parent
    checkpoint = ModelCheckpoint(dirpath=out, save_last=True, save_top_k=0, every_n_train_steps=checkpoint_every)
    trainer = make_trainer(cfg, out, name, max_steps, callbacks=[checkpoint], validate=validate)
    last = out / "last.ckpt"
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(last) if last.is_file() else None)
    save_final_checkpoint(trainer, final)
    return trainer


def save_final_checkpoint(trainer: pl.Trainer, final: Path) -> None:
    """Save on every rank (the call is collective), then publish atomically from rank 0.

    An interrupted fit (signal, Ctrl-C) publishes nothing, so the next run resumes from ``last.ckpt``
    instead of mistaking a partly trained model for a finished one.
    """
    if trainer.interrupted or trainer.global_step < trainer.max_steps:
        raise StageMissingError(f"training stopped at step {trainer.global_step} of {trainer.max_steps}; "
                                f"run the same command again to resume from {final.parent / 'last.ckpt'}")
    tmp = final.with_name(f"{TMP_PREFIX}{final.name}.tmp")
    trainer.save_checkpoint(tmp)
    trainer.strategy.barrier()
    if trainer.is_global_zero:
        os.replace(tmp, final)


def read_stages(out: Path) -> dict[str, Any]:
    p = out / STAGES_FILE
    return json.loads(p.read_text()) if p.is_file() else {}


@contextmanager
def stage(out: Path, name: str) -> Iterator[dict[str, Any]]:
    """Time a stage and record it in ``OUT/stages.json``; the yielded dict collects its results."""
    record: dict[str, Any] = {}
    start = time.perf_counter()
    log.info("stage %s ...", name)
    yield record
    record["seconds"] = round(time.perf_counter() - start, 2)
    stages = read_stages(out)
    previous = stages.get(name, {})
    if record.get("skipped") and "seconds" in previous:
        record["seconds"] = previous["seconds"]
    stages[name] = {**previous, **record}
    atomic_write_json(out / STAGES_FILE, stages)
    log.info("stage %s done in %.1f s", name, record["seconds"])
