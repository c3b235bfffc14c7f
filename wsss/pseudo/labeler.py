"""The resumable, parallel pseudo-mask labeler: CAM files -> VOC-palette PNG masks.

One PNG per image, written atomically; images whose PNG exists are skipped, so a killed run resumes
where it stopped. Work is spread over a process pool (all cores by default).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image
from tqdm import tqdm

from wsss.affinity.par import par_cams
from wsss.data.base import SegDataset, read_image
from wsss.data.palette import mask_file_ok, write_mask
from wsss.errors import DataError
from wsss.io import clean_stale_temps
from wsss.processes import worker_pool
from wsss.pseudo.crf import crf_mask
from wsss.pseudo.storage import load_cams
from wsss.pseudo.thresholds import cams_to_mask, power_background_mask

log = logging.getLogger("wsss")


@dataclass(frozen=True)
class LabelJob:
    """Everything one worker needs for one image (plain data: picklable for the pool)."""

    image_id: str
    cam_path: Path
    image_path: Path
    out_path: Path
    bg_threshold: float
    high: float | None
    low: float | None
    crf: bool
    bg_power: float | None = None
    crf_params: dict[str, Any] = field(default_factory=dict)
    num_classes: int | None = None
    par: bool = False


def label_one(job: LabelJob) -> str:
    """Make and write one pseudo mask; return its image id."""
    cams, class_ids = load_cams(job.cam_path, job.num_classes)
    with Image.open(job.image_path) as img:
        width, height = img.size
    if (height, width) != cams.shape[1:]:
        raise DataError(f"{job.cam_path}: CAM size {cams.shape[1:]} differs from its image "
                        f"{(height, width)} ({job.image_path}); regenerate it with `wsss cams`")
    if job.par:
        cams = par_cams(read_image(job.image_path), cams)
    if job.crf:
        mask = crf_mask(read_image(job.image_path), cams, class_ids, job.bg_threshold, job.high, job.low,
                        job.bg_power, **job.crf_params)
    elif job.bg_power is not None and job.high is None:
        mask = power_background_mask(cams, class_ids, job.bg_power)
    else:
        mask = cams_to_mask(cams, class_ids, bg_threshold=job.bg_threshold, high=job.high, low=job.low)
    write_mask(job.out_path, mask)
    return job.image_id


def check_cam_folder(cam_dir: Path, dataset: SegDataset) -> None:
    """Fail before any work when CAM files and the dataset split disagree."""
    if not cam_dir.is_dir():
        raise DataError(f"CAM folder {cam_dir} not found; run `wsss cams` first")
    known = set(dataset.ids)
    extra = sorted(p.stem for p in cam_dir.glob("*.npz") if p.stem not in known)
    if extra:
        raise DataError(f"{cam_dir}: CAM files for images that split {dataset.split!r} does not have, e.g. "
                        f"{extra[:3]} (wrong --data.cam_split, or CAMs of another dataset)")
    missing = [i for i in dataset.ids if not (cam_dir / f"{i}.npz").is_file()]
    if missing:
        raise DataError(f"{cam_dir}: no CAM file for {len(missing)} images of split {dataset.split!r}, e.g. "
                        f"{missing[:3]}; run `wsss cams` (it resumes) to finish them")


def check_writable(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".tmp-write-probe"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise DataError(f"output folder {out_dir} is not writable ({exc})") from exc


def make_pseudo_masks(cam_dir: str | Path, dataset: SegDataset, out_dir: str | Path, bg_threshold: float = 0.25,
                      high: float | None = None, low: float | None = None, bg_power: float | None = None,
                      crf: bool = False,
                      crf_params: dict[str, Any] | None = None, workers: int | None = None,
                      progress: bool = True, par: bool = False) -> dict[str, int]:
    """Write ``out_dir/<id>.png`` for every image of ``dataset`` from ``cam_dir/<id>.npz``.

    Args:
        bg_threshold: background threshold (:func:`~wsss.pseudo.cams_to_mask`); also the background
            score of the CRF's unary.
        high, low: ignore band (both or neither).
        bg_power: use the power background score ``(1 - max cam) ** bg_power`` instead of the
            constant threshold (PSA/IRN style).
        crf: refine with :func:`~wsss.pseudo.dense_crf` (``crf_params`` are its keyword arguments).
        par: refine the CAMs with PAR (:func:`wsss.affinity.par.par_cams`) first.
        workers: processes (None = all cores; 1 = in this process).

    Returns:
        ``{"written": n, "skipped": n}``.
    """
    cam_dir, out_dir = Path(cam_dir), Path(out_dir)
    check_cam_folder(cam_dir, dataset)
    check_writable(out_dir)
    clean_stale_temps(out_dir)
    jobs = [LabelJob(i, cam_dir / f"{i}.npz", dataset.image_path(i), out_dir / f"{i}.png", bg_threshold, high, low,
                     crf, bg_power, dict(crf_params or {}), num_classes=dataset.num_classes, par=par)
            for i in dataset.ids if not mask_file_ok(out_dir / f"{i}.png")]
    skipped = len(dataset.ids) - len(jobs)
    if skipped:
        log.info("%s: %d masks already done, %d to make", out_dir, skipped, len(jobs))
    run_pool(label_one, jobs, workers, f"pseudo masks -> {out_dir.name}", progress)
    return {"written": len(jobs), "skipped": skipped}


def run_pool(fn: Callable[[Any], str], jobs: list, workers: int | None, desc: str, progress: bool = True) -> None:
    """``fn(job)`` for every job, over ``workers`` processes (None = all cores; 1 = in this process)."""
    workers = workers or os.cpu_count() or 1
    bar = tqdm(total=len(jobs), desc=desc, unit="img", disable=not progress)
    if workers == 1 or len(jobs) <= 1:
        for job in jobs:
            fn(job)
            bar.update()
    else:
        with worker_pool(workers) as pool:
            for _ in pool.imap_unordered(fn, jobs, chunksize=max(1, min(16, len(jobs) // (4 * workers)))):
                bar.update()
    bar.close()

