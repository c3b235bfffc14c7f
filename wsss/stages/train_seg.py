"""Stage ``train-seg``: train the segmenter on a mask folder and evaluate it on the val split."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from wsss.config import RunConfig
from wsss.errors import StageMissingError
from wsss.eval.evaluate import evaluate_masks
from wsss.models.segmenter import Segmenter
from wsss.models.weights import checkpoint_file_ok
from wsss.stages.common import datamodule_for, dataset_for
from wsss.stages.fingerprint import Fingerprint, stage_fingerprint
from wsss.stages.pseudo import eval_dir, pseudo_dir
from wsss.stages.records import finished_record, read_stages, recorded_input, stage, update_record
from wsss.stages.training import fit_resumable
from wsss.train.seg_inference import evaluate_segmenter
from wsss.train.segmentation import SegmenterModule

log = logging.getLogger("wsss")


def mask_source(cfg: RunConfig, masks: str) -> Path | None:
    """Folder of training masks for ``masks`` (None = the dataset's ground truth)."""
    if masks == "gt":
        return None
    if masks in ("pseudo", "pseudo_crf"):
        folder = pseudo_dir(cfg, crf=masks == "pseudo_crf")
        if not folder.is_dir():
            raise StageMissingError(f"pseudo-mask folder {folder} not found; run `wsss pseudo` with the same --out first")
        return folder
    folder = Path(masks)
    if not folder.is_dir():
        raise StageMissingError(f"segmenter.masks: mask folder {folder} not found (use pseudo_crf, pseudo, gt or a folder)")
    return folder


def masks_name(masks: str) -> str:
    """The stage and folder suffix of a mask source (``gt``, ``pseudo_crf``, or a folder's name)."""
    return "gt" if masks == "gt" else Path(masks).name


def train_seg_fingerprint(cfg: RunConfig, masks: str, pseudo: str | None = None) -> Fingerprint:
    """Segmenter training settings plus the masks it learns from: the ``pseudo`` record (or
    ``pseudo``, a planned digest), the listing of a folder of masks made elsewhere, or nothing for
    the ground truth."""
    inputs = {}
    if masks in ("pseudo", "pseudo_crf"):
        inputs["pseudo"] = pseudo or recorded_input(cfg.out_dir, "pseudo", pseudo_dir(cfg, crf=masks == "pseudo_crf"))
    elif masks != "gt":
        inputs["masks"] = recorded_input(cfg.out_dir, "masks", Path(masks))
    return stage_fingerprint(cfg, "train_seg", inputs, extra_fields={"segmenter.masks": masks})


def eval_settings(cfg: RunConfig) -> dict[str, Any]:
    s = cfg.segmenter
    return {"scales": list(s.eval_scales), "flip": s.eval_flip, "crf": s.eval_crf,
            "crf_params": cfg.pseudo.crf_params() if s.eval_crf else None}


def run_train_seg(cfg: RunConfig, masks: str | None = None) -> dict[str, Any]:
    """Train on ``masks`` (default ``cfg.segmenter.masks``) into ``OUT/segmenter_<masks>/``; return val metrics.

    Evaluation is redone only when the checkpoint or the evaluation settings changed."""
    s = cfg.segmenter
    masks = masks or s.masks
    name = masks_name(masks)
    stage_name = f"train_seg_{name}"
    final = cfg.out_dir / f"segmenter_{name}" / "segmenter.ckpt"
    source = mask_source(cfg, masks)
    fingerprint = train_seg_fingerprint(cfg, masks)
    if finished_record(cfg.out_dir, stage_name, fingerprint,
                       lambda: [] if checkpoint_file_ok(final) else [final]) is None:
        with stage(cfg.out_dir, stage_name, fingerprint):
            pl.seed_everything(cfg.seed, workers=True)
            val_ds = dataset_for(cfg, cfg.data.val_split)
            module = SegmenterModule(num_classes=val_ds.num_classes, head=s.head, head_kwargs=dict(s.head_kwargs),
                                     class_names=list(val_ds.class_names), **s.module_kwargs())
            datamodule = datamodule_for(cfg, s, "seg", module.model.mean, module.model.std, mask_dir=source)
            fit_resumable(cfg, module, datamodule, final, f"segmenter_{name}", s.max_steps,
                          checkpoint_every=max(1, min(500, s.max_steps // 4)), validate=False)
    record = read_stages(cfg.out_dir)[stage_name]
    metrics_file = eval_dir(cfg) / f"seg_{name}" / "metrics.json"
    if record.get("eval") == eval_settings(cfg) and "miou" in record and metrics_file.is_file():
        return json.loads(metrics_file.read_text())
    result = evaluate_checkpoint(cfg, final, eval_dir(cfg) / f"seg_{name}")
    update_record(cfg.out_dir, stage_name, {"miou": result["miou"], "eval": eval_settings(cfg)})
    return result


def evaluate_checkpoint(cfg: RunConfig, ckpt: Path, out: Path) -> dict[str, Any]:
    """mIoU of a segmenter checkpoint on the val split; predictions, metrics and plots go to ``out``."""
    s = cfg.segmenter
    model = Segmenter.from_checkpoint(ckpt).eval()
    dataset = dataset_for(cfg, cfg.data.val_split)
    evaluate_segmenter(model, dataset, scales=tuple(s.eval_scales), flip=s.eval_flip, crf=s.eval_crf,
                       crf_params=cfg.pseudo.crf_params(), out_dir=out / "pred", progress=cfg.progress)
    return evaluate_masks(out / "pred", dataset, out_dir=out)
