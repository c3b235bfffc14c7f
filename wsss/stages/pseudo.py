"""Stage ``pseudo``: seed-CAM threshold sweep, pseudo masks with and without dense CRF, their mIoU."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from wsss.config import PseudoConfig, RunConfig
from wsss.data.palette import mask_file_ok
from wsss.errors import DataError, StageMissingError
from wsss.eval.evaluate import evaluate_masks
from wsss.eval.sweep import SweepResult, sweep_cam_thresholds
from wsss.io import atomic_write_json
from wsss.pseudo.labeler import make_pseudo_masks
from wsss.stages.cams import cam_dir
from wsss.stages.common import dataset_for
from wsss.stages.fingerprint import Fingerprint, stage_fingerprint
from wsss.stages.records import finished_record, read_stages, recorded_input, stage

log = logging.getLogger("wsss")

DEFAULT_BG_THRESHOLD = 0.25
RESULT_KEYS = ("seed_cam_miou", "seed_cam_threshold", "seed_cam_precision", "seed_cam_recall", "bg_threshold",
               "pseudo_miou", "pseudo_crf_miou", "pseudo_par_miou")


def mask_variants(p: PseudoConfig) -> list[tuple[str, bool, bool]]:
    """(folder name, dense CRF, PAR) of every mask folder the ``pseudo`` stage writes."""
    return [("pseudo", False, False)] + [("pseudo_crf", True, False)] * p.crf + [("pseudo_par", False, True)] * p.par


def pseudo_dir(cfg: RunConfig, crf: bool) -> Path:
    return cfg.out_dir / ("pseudo_crf" if crf else "pseudo")


def eval_dir(cfg: RunConfig) -> Path:
    return cfg.out_dir / "eval"


def pseudo_fingerprint(cfg: RunConfig, cams: str | None = None) -> Fingerprint:
    """Settings of ``pseudo`` plus the CAMs: the ``cams`` record (or ``cams``, a planned digest)."""
    return stage_fingerprint(cfg, "pseudo", {"cams": cams or recorded_input(cfg.out_dir, "cams", cam_dir(cfg))})


def seed_sweep(cfg: RunConfig) -> SweepResult | None:
    """Best background threshold of the raw CAMs on the CAM split (None without ground truth)."""
    dataset = dataset_for(cfg, cfg.data.cam_split)
    if not dataset.has_masks():
        log.info("split %s has no ground-truth masks: no seed-CAM sweep", cfg.data.cam_split)
        return None
    result = sweep_cam_thresholds(cam_dir(cfg), dataset, out_dir=eval_dir(cfg) / "seed_cam",
                                  workers=cfg.pseudo.workers, progress=cfg.progress)
    atomic_write_json(eval_dir(cfg) / "seed_cam" / "sweep.json", result._asdict())
    return result


def check_no_skipped_images(cfg: RunConfig, dataset) -> None:
    """Images the CAM stage skipped as unreadable have no CAMs; name them rather than ask for a rerun."""
    skipped = set(read_stages(cfg.out_dir).get("cams", {}).get("unreadable_images", []))
    missing = [i for i in dataset.ids if i in skipped]
    if missing:
        raise DataError(f"images {missing[:3]} of split {dataset.split!r} ({len(missing)} in all) were skipped as "
                        "unreadable when the CAMs were made (data.skip_bad_images); set data.skip_bad_images=true "
                        "for this stage too, or repair those files and rerun `wsss cams`")


def run_pseudo(cfg: RunConfig) -> dict[str, Any]:
    """Pseudo masks of the CAM split, and with ``affinity.enabled`` the random-walk masks (stage
    ``pseudo_rw``); returns the seed-CAM and pseudo-mask scores (percent)."""
    results = run_threshold_masks(cfg)
    if cfg.affinity.enabled:
        from wsss.stages.pseudo_rw import run_pseudo_rw

        results.update(run_pseudo_rw(cfg))
    return results


def run_threshold_masks(cfg: RunConfig) -> dict[str, Any]:
    """The ``pseudo`` stage: thresholded CAMs with and without CRF (and PAR with ``pseudo.par``)."""
    cams = cam_dir(cfg)
    if not cams.is_dir():
        raise StageMissingError(f"CAM folder {cams} not found; run `wsss cams` with the same --out first")
    p = cfg.pseudo
    fingerprint = pseudo_fingerprint(cfg)
    dataset = dataset_for(cfg, cfg.data.cam_split)

    def invalid() -> list[Path]:
        folders = [cfg.out_dir / name for name, _, _ in mask_variants(p)]
        return [m for f in folders for m in (f / f"{i}.png" for i in dataset.ids) if not mask_file_ok(m)]

    done = finished_record(cfg.out_dir, "pseudo", fingerprint, invalid)
    if done is not None:
        return {k: done[k] for k in RESULT_KEYS if k in done}
    check_no_skipped_images(cfg, dataset)
    results: dict[str, Any] = {}
    with stage(cfg.out_dir, "pseudo", fingerprint) as record:
        sweep = seed_sweep(cfg)
        if sweep is not None:
            results.update(seed_cam_miou=sweep.miou, seed_cam_threshold=sweep.threshold,
                           seed_cam_precision=sweep.fg_precision, seed_cam_recall=sweep.fg_recall)
        threshold = p.bg_threshold
        if threshold is None:
            threshold = sweep.threshold if sweep is not None else DEFAULT_BG_THRESHOLD
        results["bg_threshold"] = threshold
        for name, crf, par in mask_variants(p):
            out = cfg.out_dir / name
            make_pseudo_masks(
                cams, dataset, out, bg_threshold=threshold, high=p.high, low=p.low, bg_power=p.bg_power, crf=crf,
                crf_params=p.crf_params(), workers=p.workers, progress=cfg.progress, par=par,
            )
            if dataset.has_masks():
                result = evaluate_masks(out, dataset, out_dir=eval_dir(cfg) / out.name, progress=cfg.progress)
                results[f"{name}_miou"] = float(result["miou"])
        record.update(results)
    return results
