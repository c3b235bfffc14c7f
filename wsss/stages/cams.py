"""Stage ``cams``: multi-scale + flip CAMs of every image's positive classes; ``OUT/cams/<id>.npz``."""

from __future__ import annotations

import logging
from pathlib import Path

import wsss.refiners  # noqa: F401  (registers the CLIP CAM methods of wsss.refiners.excel)
from wsss.cams import CAM_METHODS, CamMethod
from wsss.config import RunConfig
from wsss.errors import StageMissingError
from wsss.models.classifier import Classifier
from wsss.models.network import set_memory_format
from wsss.processes import export_loader_workers
from wsss.pseudo.cam_export import export_cams
from wsss.pseudo.storage import cam_file_ok
from wsss.stages.common import dataset_for
from wsss.stages.fingerprint import Fingerprint, file_digest, stage_fingerprint
from wsss.stages.records import finished_record, recorded_input, stage
from wsss.stages.train_cls import classifier_ckpt

log = logging.getLogger("wsss")


def cam_dir(cfg: RunConfig) -> Path:
    return cfg.out_dir / "cams"


def checkpoint_path(cfg: RunConfig, ckpt: str | Path | None = None) -> Path:
    path = Path(ckpt) if ckpt else classifier_ckpt(cfg)
    if not path.is_file():
        raise StageMissingError(f"classifier checkpoint {path} not found; run `wsss train-cls` with the same "
                                "--out first, or pass --ckpt")
    return path


def load_classifier(cfg: RunConfig, ckpt: str | Path | None = None) -> Classifier:
    """The trained classifier (with its refiners attached) in eval mode."""
    model = Classifier.from_checkpoint(checkpoint_path(cfg, ckpt))
    return set_memory_format(model, cfg.trainer.channels_last).eval()


def own_model_method(cfg: RunConfig) -> CamMethod | None:
    """The configured CAM method when it brings its own model (no classifier needed), else None."""
    method = CAM_METHODS.get(cfg.cams.method)
    return method if method is not None and method.build_model is not None else None


def cams_fingerprint(cfg: RunConfig, ckpt: str | Path | None = None, train_cls: str | None = None) -> Fingerprint:
    """Settings of ``cams`` plus the classifier: the file given as ``--ckpt``, else the ``train_cls``
    record (or ``train_cls``, the digest a planned classifier run will have). A method with its own
    model is fingerprinted by that model's key instead."""
    own = own_model_method(cfg)
    if own is not None:
        return stage_fingerprint(cfg, "cams", {"model": own.model_key(cfg)})
    if ckpt:
        source = file_digest(checkpoint_path(cfg, ckpt))
    else:
        source = train_cls or recorded_input(cfg.out_dir, "train_cls", classifier_ckpt(cfg))
    return stage_fingerprint(cfg, "cams", {"train_cls": source})


def run_cams(cfg: RunConfig, ckpt: str | Path | None = None) -> Path:
    out = cam_dir(cfg)
    fingerprint = cams_fingerprint(cfg, ckpt)
    dataset = dataset_for(cfg, cfg.data.cam_split)

    def invalid() -> list[Path]:
        return [p for p in (out / f"{i}.npz" for i in dataset.ids) if not cam_file_ok(p)]

    if finished_record(cfg.out_dir, "cams", fingerprint, invalid) is not None:
        return out
    with stage(cfg.out_dir, "cams", fingerprint) as record:
        own = own_model_method(cfg)
        model = own.build_model(cfg) if own is not None else load_classifier(cfg, ckpt)
        c = cfg.cams
        t = cfg.trainer
        stats = export_cams(
            model, dataset, out, method=c.method, scales=c.scales, flip=c.flip, preset=c.preset,
            target_layer=None if own is not None else c.target_layer, mean=model.mean, std=model.std, accelerator=t.accelerator,
            devices=t.devices, strategy=t.strategy, num_nodes=t.num_nodes, progress=cfg.progress,
            denoise=c.denoise, num_workers=export_loader_workers(cfg.data.num_workers, t.accelerator),
        )
        record.update(stats)
        record["unreadable_images"] = list(dataset.dropped_ids)
    return out
