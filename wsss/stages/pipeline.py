"""``wsss pipeline``: every stage in order, each skipped when its outputs are complete, then the summary."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from wsss.config import RunConfig
from wsss.errors import ConfigError
from wsss.io import atomic_write_json
from wsss.stages.cams import own_model_method, run_cams
from wsss.stages.pseudo import run_pseudo
from wsss.stages.records import read_stages
from wsss.stages.report import run_report
from wsss.stages.summary import summary_table
from wsss.stages.train_aff import run_train_aff
from wsss.stages.train_cls import run_train_cls
from wsss.stages.train_seg import run_train_seg

log = logging.getLogger("wsss")

# train-aff runs only with affinity.enabled (off by default: it trains a second network)
PIPELINE_STAGES = ("train-cls", "cams", "train-aff", "pseudo", "train-seg")


def run_pipeline(cfg: RunConfig, stages: Sequence[str] = PIPELINE_STAGES) -> dict[str, Any]:
    """Run ``stages`` (all by default, always in pipeline order) for ``cfg`` and write
    ``OUT/summary.json`` (+ ``OUT/report/`` when enabled and the classifier stage is included)."""
    unknown = [s for s in stages if s not in PIPELINE_STAGES]
    if unknown:
        raise ConfigError(f"stages: unknown {unknown}; choose from {', '.join(PIPELINE_STAGES)}")
    out = cfg.out_dir
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    # A CAM method with its own model (the CLIP methods) needs no classifier, nor does its report.
    needs_classifier = own_model_method(cfg) is None
    if "train-cls" in stages and needs_classifier:
        run_train_cls(cfg)
    if "cams" in stages:
        run_cams(cfg)
    if "train-aff" in stages and cfg.affinity.enabled:
        run_train_aff(cfg)
    pseudo = run_pseudo(cfg) if "pseudo" in stages else {}
    summary: dict[str, Any] = {
        "seed_cam_miou": pseudo.get("seed_cam_miou"),
        "seed_cam_threshold": pseudo.get("seed_cam_threshold"),
        "pseudo_miou": pseudo.get("pseudo_miou"),
        "pseudo_crf_miou": pseudo.get("pseudo_crf_miou"),
        "pseudo_par_miou": pseudo.get("pseudo_par_miou"),
        "pseudo_rw_miou": pseudo.get("pseudo_rw_miou"),
        "seg_miou": None,
        "fully_supervised_miou": None,
    }
    if "train-seg" in stages:
        summary["seg_miou"] = run_train_seg(cfg, cfg.segmenter.masks).get("miou")
        if cfg.segmenter.fully_supervised:
            summary["fully_supervised_miou"] = run_train_seg(cfg, "gt").get("miou")
    if summary["seg_miou"] is not None and summary["fully_supervised_miou"]:
        summary["wsss_over_full"] = summary["seg_miou"] / summary["fully_supervised_miou"]
    summary["seg_trained_on"] = cfg.segmenter.masks
    summary["stage_seconds"] = {name: rec.get("seconds") for name, rec in read_stages(out).items()}
    summary["total_seconds"] = round(time.perf_counter() - start, 2)
    summary["seed"] = cfg.seed
    atomic_write_json(out / "summary.json", summary)
    if cfg.report and "train-cls" in stages and needs_classifier:
        index = run_report(cfg, summary)
        log.info("report: %s", index)
    print(summary_table(summary))
    return summary
