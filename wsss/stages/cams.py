"""Stage ``cams``: multi-scale + flip CAMs of every image's positive classes; ``OUT/cams/<id>.npz``."""

from __future__ import annotations

import logging
from pathlib import Path

from wsss.config import RunConfig
from wsss.errors import StageMissingError
from wsss.models.classifier import Classifier
from wsss.pseudo.cam_export import export_cams
from wsss.stages.common import dataset_for, stage
from wsss.stages.train_cls import classifier_ckpt

log = logging.getLogger("wsss")


def cam_dir(cfg: RunConfig) -> Path:
    return cfg.out_dir / "cams"


def load_classifier(cfg: RunConfig, ckpt: str | Path | None = None) -> Classifier:
    path = Path(ckpt) if ckpt else classifier_ckpt(cfg)
    if not path.is_file():
        raise StageMissingError(f"classifier checkpoint {path} not found; run `wsss train-cls` with the same "
                                "--out first, or pass --ckpt")
    return Classifier.from_checkpoint(path).eval()


def run_cams(cfg: RunConfig, ckpt: str | Path | None = None) -> Path:
    out = cam_dir(cfg)
    with stage(cfg.out_dir, "cams") as record:
        model = load_classifier(cfg, ckpt)
        dataset = dataset_for(cfg, cfg.data.cam_split)
        c = cfg.cams
        t = cfg.trainer
        stats = export_cams(
            model, dataset, out, method=c.method, scales=c.scales, flip=c.flip, preset=c.preset,
            target_layer=c.target_layer, mean=model.mean, std=model.std, accelerator=t.accelerator,
            devices=t.devices, strategy=t.strategy, num_nodes=t.num_nodes, progress=cfg.progress,
            denoise=c.denoise,
        )
        record.update(stats)
    return out
