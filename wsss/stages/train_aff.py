"""Stage ``train-aff``: IRN's confident-region labels of the CAMs (``OUT/ir_labels/<id>.png``) and the
boundary network trained on their inter-pixel relations (``OUT/affinity/affinity.ckpt``)."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl

from wsss.affinity.labels import confident_labels
from wsss.affinity.module import AffinityModule
from wsss.config import RunConfig
from wsss.data.base import read_image
from wsss.data.palette import write_mask
from wsss.errors import StageMissingError
from wsss.pseudo.labeler import run_pool
from wsss.pseudo.storage import load_cams
from wsss.stages.cams import cam_dir
from wsss.stages.common import datamodule_for, pending_from_cams
from wsss.stages.fingerprint import Fingerprint, stage_fingerprint
from wsss.stages.records import finished_record, recorded_input, stage
from wsss.stages.training import fit_resumable

log = logging.getLogger("wsss")


def ir_label_dir(cfg: RunConfig) -> Path:
    return cfg.out_dir / "ir_labels"


def affinity_ckpt(cfg: RunConfig) -> Path:
    return cfg.out_dir / "affinity" / "affinity.ckpt"


def train_aff_fingerprint(cfg: RunConfig, cams: str | None = None) -> Fingerprint:
    """Training settings of ``affinity`` plus the CAMs: the ``cams`` record (or ``cams``, a planned digest)."""
    return stage_fingerprint(cfg, "train_aff", {"cams": cams or recorded_input(cfg.out_dir, "cams", cam_dir(cfg))})


@dataclass(frozen=True)
class ConfidentLabelJob:
    """One image's confident-region label map (plain data: picklable for the pool)."""

    image_id: str
    cam_path: Path
    image_path: Path
    out_path: Path
    fg_threshold: float
    bg_threshold: float
    crf: bool


def confident_label_one(job: ConfidentLabelJob) -> str:
    cams, class_ids = load_cams(job.cam_path)
    write_mask(job.out_path, confident_labels(read_image(job.image_path), cams, class_ids, job.fg_threshold,
                                              job.bg_threshold, job.crf))
    return job.image_id


def make_confident_labels(cfg: RunConfig) -> dict[str, int]:
    """``OUT/ir_labels/<id>.png`` for every image of the CAM split (resumable: made files are kept)."""
    a = cfg.affinity
    out = ir_label_dir(cfg)
    dataset, pending = pending_from_cams(cfg, cam_dir(cfg), out, ".png")
    jobs = [ConfidentLabelJob(i, cam_dir(cfg) / f"{i}.npz", dataset.image_path(i), out / f"{i}.png",
                              a.conf_fg_threshold, a.conf_bg_threshold, a.conf_crf) for i in pending]
    run_pool(confident_label_one, jobs, cfg.pseudo.workers, "confident regions -> ir_labels", cfg.progress)
    return {"written": len(jobs), "skipped": len(dataset.ids) - len(jobs)}


def run_train_aff(cfg: RunConfig) -> Path:
    """Confident-region labels of the CAM split, then the boundary network trained on those images
    (resumes from ``OUT/affinity/last.ckpt``)."""
    if not cam_dir(cfg).is_dir():
        raise StageMissingError(f"CAM folder {cam_dir(cfg)} not found; run `wsss cams` with the same --out first")
    final = affinity_ckpt(cfg)
    fingerprint = train_aff_fingerprint(cfg)
    if finished_record(cfg.out_dir, "train_aff", fingerprint) is not None:
        return final
    a = cfg.affinity
    with stage(cfg.out_dir, "train_aff", fingerprint) as record:
        record["ir_labels"] = make_confident_labels(cfg)
        pl.seed_everything(cfg.seed, workers=True)
        module = AffinityModule(backbone=a.backbone, pretrained=a.pretrained, backbone_kwargs=dict(a.backbone_kwargs),
                                radius=a.radius, optimizer=a.optimizer, lr=a.lr, weight_decay=a.weight_decay,
                                momentum=a.momentum, max_steps=a.max_steps)
        on_cam_split = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, train_split=cfg.data.cam_split))
        datamodule = datamodule_for(on_cam_split, a, "seg", module.model.mean, module.model.std,
                                    mask_dir=ir_label_dir(cfg))
        trainer = fit_resumable(cfg, module, datamodule, final, "affinity", a.max_steps,
                                checkpoint_every=max(1, min(200, a.max_steps // 4)), validate=False)
        record["metrics"] = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    return final
