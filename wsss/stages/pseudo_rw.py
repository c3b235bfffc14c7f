"""Random walk of ``pseudo``: the CAMs propagated with the trained boundary network
(``OUT/cams_rw/<id>.npz``, same format as ``OUT/cams``), cut into ``OUT/pseudo_rw/<id>.png`` masks
(PAR-refined first with ``affinity.rw_par``)."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from wsss.affinity.network import AffinityNet
from wsss.affinity.propagate import RATIO_ARGMAX, propagate_cams
from wsss.config import AffinityConfig, RunConfig
from wsss.data.base import read_image
from wsss.errors import StageMissingError
from wsss.eval.evaluate import evaluate_masks
from wsss.eval.sweep import sweep_cam_thresholds
from wsss.io import atomic_write_json
from wsss.models.network import set_memory_format
from wsss.pseudo.labeler import make_pseudo_masks, run_pool
from wsss.pseudo.storage import load_cams, save_cams
from wsss.stages.cams import cam_dir
from wsss.stages.common import dataset_for, pending_from_cams
from wsss.stages.fingerprint import Fingerprint, stage_fingerprint
from wsss.stages.pseudo import DEFAULT_BG_THRESHOLD, eval_dir
from wsss.stages.records import finished_record, recorded_input, stage
from wsss.stages.train_aff import affinity_ckpt

log = logging.getLogger("wsss")

RW_KEYS = ("pseudo_rw_miou", "pseudo_rw_threshold")


def rw_cam_dir(cfg: RunConfig) -> Path:
    return cfg.out_dir / "cams_rw"


def pseudo_rw_dir(cfg: RunConfig) -> Path:
    return cfg.out_dir / "pseudo_rw"


def pseudo_rw_fingerprint(cfg: RunConfig, cams: str | None = None, train_aff: str | None = None) -> Fingerprint:
    """Random-walk settings plus the CAMs and the boundary network (records, or planned digests)."""
    cams = cams or recorded_input(cfg.out_dir, "cams", cam_dir(cfg))
    if train_aff is None:
        train_aff = recorded_input(cfg.out_dir, "train_aff", affinity_ckpt(cfg))
    return stage_fingerprint(cfg, "pseudo_rw", {"cams": cams, "train_aff": train_aff})


def walk_settings(a: AffinityConfig) -> dict[str, Any]:
    """The keyword arguments of :func:`~wsss.affinity.propagate.propagate_cams` that ``affinity`` sets."""
    return dict(radius=a.rw_radius, beta=a.beta, exp_times=a.exp_times, background=a.rw_background,
                bg_power=a.rw_bg_power, cam_power=a.rw_cam_power, par=a.rw_par)


@dataclass(frozen=True)
class WalkJob:
    """One image's random walk (plain data: picklable for the pool; each worker loads the network once);
    ``walk`` holds :func:`walk_settings`."""

    image_id: str
    cam_path: Path
    image_path: Path
    out_path: Path
    ckpt: Path
    channels_last: bool
    walk: dict[str, Any]


@functools.lru_cache(maxsize=1)
def boundary_net(ckpt: Path, channels_last: bool) -> AffinityNet:
    return set_memory_format(AffinityNet.from_checkpoint(ckpt), channels_last).eval()


def walk_one(job: WalkJob) -> str:
    cams, class_ids = load_cams(job.cam_path)
    with torch.no_grad():
        walked = propagate_cams(boundary_net(job.ckpt, job.channels_last), read_image(job.image_path), cams,
                                **job.walk)
    save_cams(job.out_path, walked, class_ids)
    return job.image_id


def write_rw_cams(cfg: RunConfig) -> dict[str, int]:
    """``OUT/cams_rw/<id>.npz`` for every image of the CAM split, over ``pseudo.workers`` processes
    (one torch thread each: on 2 cores 1.23x one process with two threads, ``scripts/bench.py walk``);
    files already made are kept."""
    out = rw_cam_dir(cfg)
    dataset, pending = pending_from_cams(cfg, cam_dir(cfg), out, ".npz")
    walk = walk_settings(cfg.affinity)
    jobs = [WalkJob(i, cam_dir(cfg) / f"{i}.npz", dataset.image_path(i), out / f"{i}.npz", affinity_ckpt(cfg),
                    cfg.trainer.channels_last, walk) for i in pending]
    try:
        run_pool(walk_one, jobs, cfg.pseudo.workers, "random walk -> cams_rw", cfg.progress)
    finally:  # a later train-aff may rewrite the checkpoint at the same path
        boundary_net.cache_clear()
    return {"written": len(jobs), "skipped": len(dataset.ids) - len(jobs)}


def run_pseudo_rw(cfg: RunConfig) -> dict[str, Any]:
    """Random-walk pseudo masks of the CAM split; returns ``pseudo_rw_miou`` (percent, with ground
    truth) and the threshold used."""
    ckpt = affinity_ckpt(cfg)
    if not ckpt.is_file():
        raise StageMissingError(f"affinity checkpoint {ckpt} not found; run `wsss train-aff` with the same --out "
                                "first (affinity.enabled makes `wsss pseudo` propagate the CAMs with it)")
    fingerprint = pseudo_rw_fingerprint(cfg)
    done = finished_record(cfg.out_dir, "pseudo_rw", fingerprint)
    if done is not None:
        return {k: done[k] for k in RW_KEYS if k in done}
    a = cfg.affinity
    results: dict[str, Any] = {}
    with stage(cfg.out_dir, "pseudo_rw", fingerprint) as record:
        record["cams_rw"] = write_rw_cams(cfg)
        dataset = dataset_for(cfg, cfg.data.cam_split)
        threshold = a.rw_bg_threshold
        if threshold is None:
            if dataset.has_masks():
                sweep = sweep_cam_thresholds(rw_cam_dir(cfg), dataset, out_dir=eval_dir(cfg) / "cams_rw",
                                             workers=cfg.pseudo.workers, progress=cfg.progress)
                atomic_write_json(eval_dir(cfg) / "cams_rw" / "sweep.json", sweep._asdict())
                threshold = sweep.threshold
            else:
                threshold = RATIO_ARGMAX if a.rw_background == "walk" else DEFAULT_BG_THRESHOLD
        results["pseudo_rw_threshold"] = threshold
        make_pseudo_masks(rw_cam_dir(cfg), dataset, pseudo_rw_dir(cfg), bg_threshold=threshold,
                          workers=cfg.pseudo.workers, progress=cfg.progress,
                          par=a.rw_par and a.rw_background == "threshold")
        if dataset.has_masks():
            result = evaluate_masks(pseudo_rw_dir(cfg), dataset, out_dir=eval_dir(cfg) / "pseudo_rw")
            results["pseudo_rw_miou"] = float(result["miou"])
        record.update(results)
    return results
