"""Stage ``train-seg``: train the segmenter on a mask folder and evaluate it on the val split."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint

from wsss.config import RunConfig
from wsss.data.datamodule import WSSSDataModule
from wsss.errors import StageMissingError
from wsss.eval.evaluate import evaluate_masks
from wsss.models.segmenter import Segmenter
from wsss.stages.common import dataset_for, make_trainer, stage
from wsss.stages.pseudo import eval_dir, pseudo_dir
from wsss.stages.train_cls import save_final_checkpoint
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


def run_train_seg(cfg: RunConfig, masks: str | None = None) -> dict[str, Any]:
    """Train on ``masks`` (default ``cfg.segmenter.masks``) into ``OUT/segmenter_<masks>/``; return val metrics."""
    s = cfg.segmenter
    masks = masks or s.masks
    name = "gt" if masks == "gt" else Path(masks).name
    out = cfg.out_dir / f"segmenter_{name}"
    final = out / "segmenter.ckpt"
    with stage(cfg.out_dir, f"train_seg_{name}") as record:
        source = mask_source(cfg, masks)
        if final.is_file():
            log.info("segmenter checkpoint %s exists: skipping training", final)
            record["skipped"] = True
        else:
            pl.seed_everything(cfg.seed, workers=True)
            val_ds = dataset_for(cfg, cfg.data.val_split)
            module = SegmenterModule(
                backbone=s.backbone, num_classes=val_ds.num_classes, head=s.head, head_kwargs=dict(s.head_kwargs),
                pretrained=s.pretrained, backbone_kwargs=dict(s.backbone_kwargs), optimizer=s.optimizer, lr=s.lr,
                momentum=s.momentum, weight_decay=s.weight_decay, head_lr_mult=s.head_lr_mult,
                warmup_steps=s.warmup_steps, max_steps=s.max_steps, class_names=list(val_ds.class_names),
            )
            datamodule = WSSSDataModule(
                dataset=cfg.data.name, root=cfg.data.root, train_split=cfg.data.train_split,
                val_split=cfg.data.val_split, task="seg", crop_size=s.crop_size, batch_size=s.batch_size,
                num_workers=cfg.data.num_workers, mean=module.model.mean, std=module.model.std,
                scale_range=tuple(s.scale_range), dataset_kwargs=dict(cfg.data.kwargs), seed=cfg.seed,
                mask_dir=str(source) if source is not None else None,
            )
            every = max(1, min(500, s.max_steps // 4))
            checkpoint = ModelCheckpoint(dirpath=out, save_last=True, save_top_k=0, every_n_train_steps=every)
            trainer = make_trainer(cfg, out, f"segmenter_{name}", s.max_steps, callbacks=[checkpoint],
                                   validate=False)
            last = out / "last.ckpt"
            trainer.fit(module, datamodule=datamodule, ckpt_path=str(last) if last.is_file() else None)
            save_final_checkpoint(trainer, final)
        result = evaluate_checkpoint(cfg, final, eval_dir(cfg) / f"seg_{name}")
        record["miou"] = result["miou"]
    return result


def evaluate_checkpoint(cfg: RunConfig, ckpt: Path, out: Path) -> dict[str, Any]:
    """mIoU of a segmenter checkpoint on the val split; predictions, metrics and plots go to ``out``."""
    s = cfg.segmenter
    model = Segmenter.from_checkpoint(ckpt).eval()
    dataset = dataset_for(cfg, cfg.data.val_split)
    evaluate_segmenter(model, dataset, scales=tuple(s.eval_scales), flip=s.eval_flip, crf=s.eval_crf,
                       crf_params=cfg.pseudo.crf_params(), out_dir=out / "pred", progress=cfg.progress)
    return evaluate_masks(out / "pred", dataset, out_dir=out)
