"""Background-threshold sweep of seed CAMs: every threshold in one pass over the CAM files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
from tqdm import tqdm

from wsss.data.base import SegDataset
from wsss.data.palette import IGNORE_INDEX, read_mask
from wsss.errors import DataError
from wsss.processes import worker_pool
from wsss.pseudo.storage import load_cams

DEFAULT_THRESHOLDS = tuple(np.round(np.arange(0.05, 0.951, 0.05), 2).tolist())


class SweepResult(NamedTuple):
    """The best background threshold, its mIoU (percent), the curve ``[[threshold, mIoU], ...]`` and
    the foreground precision / recall (percent) of the CAM at the best threshold."""

    threshold: float
    miou: float
    curve: list[list[float]]
    fg_precision: float
    fg_recall: float


def threshold_confusions(cams: np.ndarray, class_ids: np.ndarray, gt: np.ndarray, thresholds: np.ndarray,
                         num_classes: int) -> np.ndarray:
    """Confusion matrices [T, C, C] of the threshold labels of one image, for every threshold."""
    keep = gt != IGNORE_INDEX
    target = gt[keep].astype(np.int64)
    if cams.shape[0] == 0:
        best = np.zeros(target.shape, np.float32)
        labels = np.zeros(target.shape, np.int64)
    else:
        best = cams.max(0)[keep]
        labels = np.asarray(class_ids, np.int64)[cams.argmax(0)[keep]]
    out = np.empty((len(thresholds), num_classes, num_classes), np.int64)
    for i, t in enumerate(thresholds):
        pred = np.where(best >= t, labels, 0)
        out[i] = np.bincount(target * num_classes + pred, minlength=num_classes ** 2).reshape(num_classes, num_classes)
    return out


def _one(args) -> np.ndarray:
    cam_path, mask_path, thresholds, num_classes = args
    cams, class_ids = load_cams(cam_path, num_classes)
    gt = read_mask(mask_path, num_classes)
    if gt.shape != cams.shape[1:]:
        raise DataError(f"{cam_path}: CAM size {cams.shape[1:]} differs from the ground truth {gt.shape} ({mask_path})")
    return threshold_confusions(cams, class_ids, gt, thresholds, num_classes)


def sweep_cam_thresholds(cam_dir: str | Path, dataset: SegDataset, thresholds=DEFAULT_THRESHOLDS,
                         out_dir: str | Path | None = None, workers: int | None = None,
                         progress: bool = True) -> SweepResult:
    """Score every threshold in one pass over the CAM files; the curve PNG goes to ``out_dir``."""
    from wsss.eval.miou import ConfusionMatrix
    from wsss.viz.plots import plot_threshold_curve

    cam_dir = Path(cam_dir)
    thresholds = np.asarray(thresholds, np.float32)
    jobs = []
    for image_id in dataset.ids:
        cam_path = cam_dir / f"{image_id}.npz"
        if not cam_path.is_file():
            raise DataError(f"{cam_path}: no CAM file for image {image_id!r}; run `wsss cams` first")
        mask_path = dataset.mask_path(image_id)
        if mask_path is None or not mask_path.is_file():
            raise DataError(f"image {image_id!r} has no ground-truth mask: the sweep needs masks")
        jobs.append((cam_path, mask_path, thresholds, dataset.num_classes))
    total = np.zeros((len(thresholds), dataset.num_classes, dataset.num_classes), np.int64)
    workers = workers or os.cpu_count() or 1
    bar = tqdm(total=len(jobs), desc="threshold sweep", unit="img", disable=not progress)
    if workers == 1:
        for job in jobs:
            total += _one(job)
            bar.update()
    else:
        with worker_pool(workers) as pool:
            for part in pool.imap_unordered(_one, jobs, chunksize=max(1, len(jobs) // (8 * workers))):
                total += part
                bar.update()
    bar.close()
    scores = []
    for matrix in total:
        cm = ConfusionMatrix(dataset.num_classes)
        cm.matrix = matrix
        scores.append(cm.compute())
    mious = [s["miou"] for s in scores]
    best = int(np.nanargmax(mious))
    curve = [[float(t), float(m)] for t, m in zip(thresholds, mious)]
    if out_dir is not None:
        plot_threshold_curve([c[0] for c in curve], mious, Path(out_dir) / "threshold_curve.png")
    return SweepResult(float(thresholds[best]), float(mious[best]), curve, scores[best]["fg_precision"],
                       scores[best]["fg_recall"])
