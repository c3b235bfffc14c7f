"""Lightning training for the stages: trainer and loggers from the config, atomic checkpoints (also
at refiner stage boundaries), random states in checkpoints, and the resumable fit."""

from __future__ import annotations

import logging
import os
import random
import shutil
import warnings
from pathlib import Path
from typing import Any
from weakref import proxy

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from wsss.config import RunConfig
from wsss.errors import ConfigError, StageMissingError
from wsss.io import TMP_PREFIX, atomic_path
from wsss.models.network import set_memory_format

log = logging.getLogger("wsss")


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


def make_trainer(cfg: RunConfig, save_dir: Path, name: str, max_steps: int, callbacks: list | None = None,
                 validate: bool = True) -> pl.Trainer:
    """A Trainer for a training stage; devices, strategy and precision come from ``cfg.trainer``.

    With ``validate`` the validation loop runs every ``trainer.val_every_n_steps`` steps, and once at
    the last step when that is None (validation costs time a training step does not need);
    ``validate=False`` skips it (the stage evaluates once at the end instead).
    """
    t = cfg.trainer
    every = min(t.val_every_n_steps or max_steps, max_steps)
    kwargs: dict[str, Any] = dict(
        accelerator=t.accelerator, devices=t.devices, strategy=t.strategy, num_nodes=t.num_nodes,
        precision=t.precision, max_steps=max_steps, max_epochs=-1, logger=make_loggers(cfg, save_dir, name),
        callbacks=[*(callbacks or []), MemoryFormat(t.channels_last)], default_root_dir=str(save_dir),
        log_every_n_steps=t.log_every_n_steps,
        deterministic=t.deterministic, enable_progress_bar=cfg.progress, enable_model_summary=False,
        num_sanity_val_steps=0, limit_val_batches=None if validate else 0,
        check_val_every_n_epoch=None, val_check_interval=every,
    )
    return pl.Trainer(**kwargs)


class MemoryFormat(pl.Callback):
    """Puts the module in ``trainer.channels_last``'s memory format at setup, before the optimisers
    are built and a checkpoint is restored into it."""

    def __init__(self, channels_last: bool):
        self.channels_last = channels_last

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        set_memory_format(pl_module, self.channels_last)


class AtomicCheckpoint(ModelCheckpoint):
    """``last.ckpt`` every ``every_n_train_steps`` steps, written so that it appears complete or not at
    all, plus ``stage_<name>.ckpt`` (and ``last.ckpt``) at the end of every stage of a refiner
    schedule (``stage_ends``: ``{first step of the next stage: name}``)."""

    def __init__(self, dirpath: Path, every_n_train_steps: int, stage_ends: dict[int, str] | None = None):
        super().__init__(dirpath=dirpath, save_last=True, save_top_k=0, every_n_train_steps=every_n_train_steps,
                         enable_version_counter=False)
        self.stage_ends = dict(stage_ends or {})

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        atomic_trainer_checkpoint(trainer, Path(filepath), self.save_weights_only)
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.after_save_checkpoint(proxy(self))

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        name = self.stage_ends.get(trainer.global_step)
        if name is None:
            return
        last = Path(self.dirpath) / f"{self.CHECKPOINT_NAME_LAST}{self.FILE_EXTENSION}"
        if self._last_global_step_saved != trainer.global_step:
            self.last_model_path = str(last)
            self._save_checkpoint(trainer, str(last))
        if trainer.is_global_zero:
            with atomic_path(Path(self.dirpath) / f"stage_{name}.ckpt") as tmp:
                shutil.copyfile(last, tmp)
        log.info("end of stage %s at step %d: %s", name, trainer.global_step, Path(self.dirpath) / f"stage_{name}.ckpt")


def atomic_trainer_checkpoint(trainer: pl.Trainer, path: Path, weights_only: bool = False) -> None:
    """``trainer.save_checkpoint`` (collective) into a temporary file that rank 0 renames onto ``path``."""
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}.tmp")
    trainer.save_checkpoint(tmp, weights_only)
    if trainer.is_global_zero:
        os.replace(tmp, path)
    trainer.strategy.barrier()


class RNGState(pl.Callback):
    """Saves the global random states (torch, CUDA, numpy, Python) in every checkpoint and restores
    them on resume, so that refiners drawing from them continue the uninterrupted run's stream."""

    def state_dict(self) -> dict[str, Any]:
        state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]),
                 "python_version": random.getstate()[0], "python_gauss": random.getstate()[2],
                 "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64)),
                 "numpy_pos": int(np.random.get_state()[2])}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        torch.set_rng_state(state["torch"])
        random.setstate((state["python_version"], tuple(state["python"]), state["python_gauss"]))
        np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"]))
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


def fit_resumable(cfg: RunConfig, module: pl.LightningModule, datamodule: pl.LightningDataModule, final: Path,
                  name: str, max_steps: int, checkpoint_every: int, validate: bool = True) -> pl.Trainer:
    """Train ``module`` for ``max_steps``, resuming from ``final.parent/last.ckpt`` (saved every
    ``checkpoint_every`` steps and at the end of every refiner stage), and publish the finished
    model as ``final``. A resumed run continues with the batches, augmentations and random states
    the uninterrupted run would have had (:mod:`wsss.data.sampling`, :class:`RNGState`), so it ends
    with the same weights."""
    out = final.parent
    stage_ends = module.stage_ends() if hasattr(module, "stage_ends") else {}
    checkpoint = AtomicCheckpoint(out, checkpoint_every, stage_ends)
    trainer = make_trainer(cfg, out, name, max_steps, callbacks=[checkpoint, RNGState()], validate=validate)
    last = out / "last.ckpt"
    with warnings.catch_warnings():
        # Lightning cannot see that our batch sampler is keyed by the step, so it warns that a
        # mid-epoch resume repeats batches; ours continues with the uninterrupted run's batches.
        warnings.filterwarnings("ignore", message=r"You're resuming from a checkpoint that ended before the epoch")
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(last) if last.is_file() else None,
                    weights_only=True)
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
    atomic_trainer_checkpoint(trainer, final)
