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
from wsss.models.network import set_memory_format
from wsss.models.segmenter import Segmenter
from wsss.models.weights import checkpoint_file_ok
from wsss.stages.common import datamodule_for, dataset_for
from wsss.stages.fingerprint import Fingerprint, stage_fingerprint
from wsss.stages.pseudo import eval_dir
from wsss.stages.records import finished_record, read_stages, recorded_input, stage, update_record
from wsss.stages.training import fit_resumable
from wsss.train.seg_inference import evaluate_segmenter
from wsss.train.segmentation import SegmenterModule

log = logging.getLogger("wsss")


MASK_STAGES = {"pseudo": "pseudo", "pseudo_crf": "pseudo", "pseudo_par": "pseudo", "pseudo_rw": "pseudo_rw"}


def mask_source(cfg: RunConfig, masks: str) -> Path | None:
    """Folder of training masks for ``masks`` (None = the dataset's ground truth)."""
    if masks == "gt":
        return None
    if masks in MASK_STAGES:
        folder = cfg.out_dir / masks
        if not folder.is_dir():
            hint = " with pseudo.par: true" if masks == "pseudo_par" else ""
            if masks == "pseudo_rw":
                hint = " with affinity.enabled: true (after `wsss train-aff`)"
            raise StageMissingError(f"pseudo-mask folder {folder} not found; run `wsss pseudo`{hint} with the same "
                                    "--out first")
        return folder
    folder = Path(masks)
    if not folder.is_dir():
        raise StageMissingError(f"segmenter.masks: mask folder {folder} not found (use pseudo_crf, pseudo, pseudo_par, "
                                "pseudo_rw, gt or a folder)")
    return folder


def masks_name(masks: str) -> str:
    """The stage and folder suffix of a mask source (``gt``, ``pseudo_crf``, or a folder's name)."""
    return "gt" if masks == "gt" else Path(masks).name


def train_seg_fingerprint(cfg: RunConfig, masks: str, pseudo: str | None = None,
                          pseudo_rw: str | None = None) -> Fingerprint:
    """Segmenter training settings plus the masks it learns from: the record of the stage that made
    them (or ``pseudo`` / ``pseudo_rw``, planned digests), the listing of a folder of masks made
    elsewhere, or nothing for the ground truth."""
    inputs = {}
    if MASK_STAGES.get(masks) == "pseudo":
        inputs["pseudo"] = pseudo or recorded_input(cfg.out_dir, "pseudo", cfg.out_dir / masks)
    elif masks == "pseudo_rw":
        inputs["pseudo_rw"] = pseudo_rw or recorded_input(cfg.out_dir, "pseudo_rw", cfg.out_dir / masks)
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
    warn_if_undertrained(cfg, masks, result["miou"])
    return result


def warn_if_undertrained(cfg: RunConfig, masks: str, seg_miou: float) -> str | None:
    """Log (and return) a warning when the segmenter scores below the masks it learned from: a
    segmenter usually ends above its training masks, so this mostly means too few steps."""
    stage_name = MASK_STAGES.get(masks)
    masks_miou = read_stages(cfg.out_dir).get(stage_name, {}).get(f"{masks}_miou") if stage_name else None
    if masks_miou is None or seg_miou >= masks_miou:
        return None
    s = cfg.segmenter
    train_images = len(dataset_for(cfg, cfg.data.train_split).ids)
    epochs = s.max_steps * s.batch_size / max(1, train_images)
    message = (f"the segmenter trained on {masks} scores {seg_miou:.2f} mIoU on {cfg.data.val_split}, below its own "
               f"training masks ({masks_miou:.2f} on {cfg.data.cam_split}): it is probably undertrained "
               f"({s.max_steps} steps x batch {s.batch_size} = {epochs:.1f} epochs of {train_images} images); "
               "raise segmenter.max_steps (real datasets need tens of epochs)")
    log.warning(message)
    return message


def evaluate_checkpoint(cfg: RunConfig, ckpt: Path, out: Path) -> dict[str, Any]:
    """mIoU of a segmenter checkpoint on the val split; predictions, metrics and plots go to ``out``."""
    s = cfg.segmenter
    model = set_memory_format(Segmenter.from_checkpoint(ckpt), cfg.trainer.channels_last).eval()
    dataset = dataset_for(cfg, cfg.data.val_split)
    evaluate_segmenter(model, dataset, scales=tuple(s.eval_scales), flip=s.eval_flip, crf=s.eval_crf,
                       crf_params=cfg.pseudo.crf_params(), out_dir=out / "pred", progress=cfg.progress)
    return evaluate_masks(out / "pred", dataset, out_dir=out)
