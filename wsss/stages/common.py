"""What every stage needs: datasets from the config, a Lightning trainer, loggers, stage bookkeeping."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from weakref import proxy

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint

from wsss.config import NetworkTrainingConfig, RunConfig
from wsss.data import build_dataset
from wsss.data.base import SegDataset
from wsss.data.datamodule import WSSSDataModule
from wsss.errors import ConfigError, StageMissingError, StaleOutputsError
from wsss.io import TMP_PREFIX, atomic_path, atomic_write_json
from wsss.stages.fingerprint import Fingerprint, file_digest, folder_digest

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


def fit_resumable(cfg: RunConfig, module: pl.LightningModule, datamodule: pl.LightningDataModule, final: Path,
                  name: str, max_steps: int, checkpoint_every: int, validate: bool = True) -> pl.Trainer:
    """Train ``module`` for ``max_steps``, resuming from ``final.parent/last.ckpt`` (saved every
    ``checkpoint_every`` steps and at the end of every refiner stage), and publish the finished
    model as ``final``."""
    out = final.parent
    stage_ends = module.stage_ends() if hasattr(module, "stage_ends") else {}
    checkpoint = AtomicCheckpoint(out, checkpoint_every, stage_ends)
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
    atomic_trainer_checkpoint(trainer, final)


def read_stages(out: Path) -> dict[str, Any]:
    p = out / STAGES_FILE
    return json.loads(p.read_text()) if p.is_file() else {}


STAGE_OUTPUTS: dict[str, list[str]] = {
    "train_cls": ["classifier"],
    "cams": ["cams"],
    "pseudo": ["pseudo", "pseudo_crf", "eval/seed_cam", "eval/pseudo", "eval/pseudo_crf"],
    "report": ["report"],
}


def stage_outputs(name: str) -> list[str]:
    """Paths (relative to OUT) a stage writes; ``train_seg_<masks>`` writes ``segmenter_<masks>``."""
    if name.startswith("train_seg_"):
        masks = name[len("train_seg_"):]
        return [f"segmenter_{masks}", f"eval/seg_{masks}"]
    return STAGE_OUTPUTS[name]


def _has_files(path: Path) -> bool:
    if path.is_symlink() or path.is_file():
        return True
    return path.is_dir() and any(p.is_file() for p in path.rglob("*"))


def outputs_exist(out: Path, name: str) -> bool:
    """True when the stage's main output (its first path) holds files."""
    return _has_files(out / stage_outputs(name)[0])


def stale_error(out: Path, name: str, changes: list[str]) -> StaleOutputsError:
    listing = "\n  ".join(changes)
    return StaleOutputsError(
        f"{out / stage_outputs(name)[0]} was made with other settings than this run's ({out / STAGES_FILE}, "
        f"stage {name}):\n  {listing}\nTo keep those outputs, run with a new --out; to redo the stage, add "
        f"--overwrite {'train-cls' if name == 'train_cls' else name} (it deletes "
        "the stage's outputs and those of the stages made from them)."
    )


def finished_record(out: Path, name: str, fingerprint: Fingerprint) -> dict[str, Any] | None:
    """The record of stage ``name`` when its outputs are complete and were made from ``fingerprint``
    (the caller skips the stage), None when the stage is to run (or resume).

    Raises :class:`StaleOutputsError` when its outputs were made from other settings, or when they
    exist with no record of how they were made."""
    record = read_stages(out).get(name)
    if record is None or "fingerprint" not in record:
        if outputs_exist(out, name):
            raise stale_error(out, name, ["no record of the settings these files were made with "
                                          "(made by an older wsss, or copied in)"])
        return None
    if record["fingerprint"] != fingerprint.digest:
        raise stale_error(out, name, fingerprint.changes(record))
    if record.get("complete") and outputs_exist(out, name):
        log.info("stage %s: outputs of an earlier run with the same settings are complete (made in %s s): "
                 "skipped", name, record.get("seconds"))
        update_record(out, name, {"last_run": "skipped"})
        return record
    return None


def update_record(out: Path, name: str, values: dict[str, Any]) -> dict[str, Any]:
    stages = read_stages(out)
    stages[name] = {**stages.get(name, {}), **values}
    atomic_write_json(out / STAGES_FILE, stages)
    return stages[name]


def recorded_input(out: Path, name: str, path: Path) -> str:
    """Fingerprint of an input stage: its recorded fingerprint, else a digest of the file or folder
    ``path`` when that was made by something else (``missing`` when it does not exist)."""
    record = read_stages(out).get(name)
    if record is not None and record.get("complete") and "fingerprint" in record:
        return record["fingerprint"]
    if path.is_file():
        return file_digest(path)
    return folder_digest(path) if path.is_dir() else "missing"


def downstream_stages(out: Path, name: str) -> list[str]:
    """``name`` and every recorded stage made (directly or not) from its outputs."""
    stages = read_stages(out)
    found = [name]
    changed = True
    while changed:
        changed = False
        for other, record in stages.items():
            inputs = record.get("made_from", {}).get("inputs", {})
            if other not in found and any(i in found for i in inputs):
                found.append(other)
                changed = True
    return found


def overwrite_stages(out: Path, names: list[str]) -> list[str]:
    """Delete the outputs and records of the named stages and of every stage made from them.

    ``train_seg`` stands for every ``train_seg_<masks>`` stage. Outputs shared with another run
    (``wsss compare`` links) are unlinked, never deleted at their source."""
    stages = read_stages(out)
    targets: list[str] = []
    for name in names:
        name = name.replace("-", "_")
        if name == "train_seg":
            matches = [s for s in stages if s.startswith("train_seg_")]
        elif name in STAGE_OUTPUTS or name.startswith("train_seg_"):
            matches = [name]
        else:
            raise ConfigError(f"--overwrite: unknown stage {name!r}; choose from train-cls, cams, pseudo, "
                              "train-seg (or train_seg_<masks>)")
        for match in matches:
            targets += [s for s in downstream_stages(out, match) if s not in targets]
    for name in targets:
        for rel in stage_outputs(name):
            path = out / rel
            if path.is_symlink() or path.is_file():
                path.unlink()
            elif path.is_dir():
                shutil.rmtree(path)
        stages.pop(name, None)
    if targets:
        atomic_write_json(out / STAGES_FILE, stages)
        log.info("overwrite: removed the outputs of %s", ", ".join(targets))
    return targets


@contextmanager
def stage(out: Path, name: str, fingerprint: Fingerprint | None = None) -> Iterator[dict[str, Any]]:
    """Time a stage and record it in ``OUT/stages.json``; the yielded dict collects its results.

    With a ``fingerprint`` the record is written first as incomplete, so that an interrupted stage
    is known (and resumed only with the same settings), and completed at the end."""
    record: dict[str, Any] = {}
    start = time.perf_counter()
    log.info("stage %s ...", name)
    base = fingerprint.record() if fingerprint is not None else {}
    if fingerprint is not None:
        stages = read_stages(out)
        stages[name] = {**base, "complete": False}
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / STAGES_FILE, stages)
    yield record
    record["seconds"] = round(time.perf_counter() - start, 2)
    stages = read_stages(out)
    stages[name] = {**base, **record, "complete": True, "last_run": "ran"}
    atomic_write_json(out / STAGES_FILE, stages)
    log.info("stage %s done in %.1f s", name, record["seconds"])
