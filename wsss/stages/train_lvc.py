"""Stage ``train-lvc``: ExCEL's Learnable Visual Calibration, an adapter and segmentation decoder on the
frozen CLIP of the ``clip`` section, trained on its online pseudo labels (``OUT/lvc/lvc.ckpt``)."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl

from wsss.config import RunConfig
from wsss.refiners.excel.lvc_module import LvcModule
from wsss.refiners.excel.methods import build_clip_cam_model, clip_model_key
from wsss.stages.common import datamodule_for
from wsss.stages.fingerprint import Fingerprint, stage_fingerprint
from wsss.stages.records import finished_record, stage
from wsss.stages.training import fit_resumable


def lvc_ckpt(cfg: RunConfig) -> Path:
    return cfg.out_dir / "lvc" / "lvc.ckpt"


def train_lvc_fingerprint(cfg: RunConfig) -> Fingerprint:
    """Training settings of ``lvc`` plus the CLIP model and texts (``clip`` section, weights, text file)."""
    return stage_fingerprint(cfg, "train_lvc", {"model": clip_model_key(cfg)})


def run_train_lvc(cfg: RunConfig) -> Path:
    """Train the LVC adapter and decoder for ``lvc.max_steps`` (resumes from ``OUT/lvc/last.ckpt``)."""
    final = lvc_ckpt(cfg)
    fingerprint = train_lvc_fingerprint(cfg)
    if finished_record(cfg.out_dir, "train_lvc", fingerprint) is not None:
        return final
    v = cfg.lvc
    with stage(cfg.out_dir, "train_lvc", fingerprint) as record:
        pl.seed_everything(cfg.seed, workers=True)
        clip = build_clip_cam_model(cfg)
        module = LvcModule(clip, **v.module_kwargs())
        datamodule = datamodule_for(cfg, v, "cls", clip.mean, clip.std)
        trainer = fit_resumable(cfg, module, datamodule, final, "lvc", v.max_steps,
                                checkpoint_every=max(1, min(500, v.max_steps // 4)), validate=False)
        record["metrics"] = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    return final
