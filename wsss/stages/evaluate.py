"""Stage ``eval``: mIoU of a mask folder, or a background-threshold sweep of a CAM folder."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from wsss.config import RunConfig
from wsss.errors import ConfigError
from wsss.eval.evaluate import evaluate_masks
from wsss.eval.sweep import sweep_cam_thresholds
from wsss.io import atomic_write_json
from wsss.stages.common import dataset_for
from wsss.stages.pseudo import eval_dir

log = logging.getLogger("wsss")


def run_eval(cfg: RunConfig, pred_dir: str | None = None, cam_dir: str | None = None, split: str | None = None,
             out: str | None = None) -> dict[str, Any]:
    """Evaluate ``pred_dir`` (masks) or ``cam_dir`` (CAMs) against the ground truth of ``split``.

    CAMs and pseudo masks (a folder named ``pseudo*``) default to the CAM split (their quality is
    reported on the training images, as in the field), other masks to the val split.
    """
    if (pred_dir is None) == (cam_dir is None):
        raise ConfigError("wsss eval: give exactly one of --pred_dir (mask folder) or --cam_dir (CAM folder)")
    folder = Path(pred_dir or cam_dir)
    if not folder.is_dir():
        raise ConfigError(f"wsss eval: folder {folder} does not exist")
    target = Path(out) if out else eval_dir(cfg) / folder.name
    if cam_dir is not None:
        dataset = dataset_for(cfg, split or cfg.data.cam_split)
        sweep = sweep_cam_thresholds(folder, dataset, out_dir=target, workers=cfg.pseudo.workers,
                                     progress=cfg.progress)
        result = sweep._asdict()
        atomic_write_json(target / "sweep.json", result)
        print(f"best background threshold {sweep.threshold:.2f}: mIoU {sweep.miou:.2f}%  (curve: {target})")
        return result
    if split is None:
        split = cfg.data.cam_split if folder.name.startswith("pseudo") else cfg.data.val_split
    return evaluate_masks(folder, dataset_for(cfg, split), out_dir=target, progress=cfg.progress)
