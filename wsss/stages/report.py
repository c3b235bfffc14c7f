"""The run's report folder: ``OUT/report/index.html`` with tables, CAM overlays, mask panels and plots."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from wsss.cams import compute_cams
from wsss.config import RunConfig
from wsss.data.palette import read_mask
from wsss.data.transforms import normalise_image
from wsss.stages.cams import load_classifier
from wsss.stages.common import dataset_for
from wsss.stages.pseudo import eval_dir, pseudo_dir
from wsss.stages.records import stage
from wsss.stages.summary import SUMMARY_ROWS
from wsss.viz.overlay import mask_rgb, overlay_cam, panel
from wsss.viz.report import Section, write_report

log = logging.getLogger("wsss")

N_EXAMPLES = 6


def _save_png(array: np.ndarray, path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path.name if path.parent.name == "report" else f"{path.parent.name}/{path.name}"


def example_ids(ids: list[str], n: int) -> list[str]:
    """``n`` ids spread evenly over the split (stable across runs)."""
    if len(ids) <= n:
        return list(ids)
    idx = np.linspace(0, len(ids) - 1, n).round().astype(int)
    return [ids[i] for i in idx]


def cam_overlay_section(cfg: RunConfig, report_dir: Path) -> Section:
    """Per example image: the image, its ground truth and one overlay per configured CAM method."""
    dataset = dataset_for(cfg, cfg.data.cam_split)
    model = load_classifier(cfg)
    section = Section("CAM overlays per method",
                      note="Single-scale CAMs of the classifier for the image's positive classes "
                           "(maximum over classes), max-normalised; target layer "
                           f"'{cfg.cams.target_layer}'.")
    has_masks = dataset.has_masks()
    for image_id in example_ids(dataset.ids, N_EXAMPLES):
        image = dataset.load_image(image_id)
        classes = dataset.labels(image_id)
        if len(classes) == 0:
            continue
        x = normalise_image(image, model.mean, model.std)[None]
        targets = torch.as_tensor(classes - 1, dtype=torch.long).unsqueeze(0)
        tiles, titles = [image], ["image"]
        if has_masks:
            tiles.append(mask_rgb(dataset.load_mask(image_id)))
            titles.append("ground truth")
        for method in cfg.cams.overlay_methods:
            cams = compute_cams(model, x, targets, cfg.cams.target_layer, method=method, normalize="max")
            tiles.append(overlay_cam(image, cams[0].max(0).values.detach().numpy()))
            titles.append(method)
        names = ", ".join(dataset.class_names[c] for c in classes)
        section.figures.append((_save_png(panel(tiles, titles), report_dir / "cams" / f"{image_id}.png"),
                                f"{image_id}: {names}"))
    return section


def mask_panel_section(cfg: RunConfig, report_dir: Path) -> Section | None:
    """Image, ground truth, pseudo mask without and with CRF, for examples of the CAM split."""
    dataset = dataset_for(cfg, cfg.data.cam_split)
    if not dataset.has_masks():
        return None
    folders = [(pseudo_dir(cfg, crf=False), "pseudo"), (pseudo_dir(cfg, crf=True), "pseudo + CRF")]
    folders = [(f, t) for f, t in folders if f.is_dir()]
    section = Section("Pseudo masks", note=f"Split '{cfg.data.cam_split}'; white = ignore (255).")
    for image_id in example_ids(dataset.ids, N_EXAMPLES):
        tiles = [dataset.load_image(image_id), mask_rgb(dataset.load_mask(image_id))]
        titles = ["image", "ground truth"]
        for folder, title in folders:
            path = folder / f"{image_id}.png"
            if path.is_file():
                tiles.append(mask_rgb(read_mask(path)))
                titles.append(title)
        section.figures.append((_save_png(panel(tiles, titles), report_dir / "pseudo" / f"{image_id}.png"), image_id))
    return section


def segmentation_panel_section(cfg: RunConfig, report_dir: Path) -> Section | None:
    """Val images with ground truth and the predictions of each trained segmenter."""
    dataset = dataset_for(cfg, cfg.data.val_split)
    pred_dirs = sorted(p for p in eval_dir(cfg).glob("seg_*/pred") if p.is_dir())
    if not pred_dirs or not dataset.has_masks():
        return None
    section = Section("Segmenter predictions (val)")
    for image_id in example_ids(dataset.ids, N_EXAMPLES):
        tiles = [dataset.load_image(image_id), mask_rgb(dataset.load_mask(image_id))]
        titles = ["image", "ground truth"]
        for folder in pred_dirs:
            path = folder / f"{image_id}.png"
            if path.is_file():
                tiles.append(mask_rgb(read_mask(path)))
                titles.append(f"trained on {folder.parent.name.removeprefix('seg_')}")
        section.figures.append((_save_png(panel(tiles, titles), report_dir / "seg" / f"{image_id}.png"), image_id))
    return section


def plots_section(cfg: RunConfig, report_dir: Path) -> Section:
    """Every PNG the evaluation stages wrote (threshold curve, per-class IoU bars, confusion matrices)."""
    section = Section("Evaluation plots")
    plots_dir = report_dir / "plots"
    for png in sorted(eval_dir(cfg).glob("*/*.png")):
        target = plots_dir / f"{png.parent.name}_{png.name}"
        plots_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(png, target)
        section.figures.append((f"plots/{target.name}", f"{png.parent.name}: {png.stem.replace('_', ' ')}"))
    return section


def per_class_section(cfg: RunConfig) -> Section | None:
    """Per-class IoU of every evaluated result, one column each."""
    results = {}
    for metrics in sorted(eval_dir(cfg).glob("*/metrics.json")):
        data = json.loads(metrics.read_text())
        if "iou" in data and "class_names" in data:
            results[metrics.parent.name] = data
    if not results:
        return None
    names = next(iter(results.values()))["class_names"]
    header = ["class"] + list(results)
    rows = []
    for i, name in enumerate(names):
        row = [name]
        for data in results.values():
            v = data["iou"][i]
            row.append("-" if v is None else f"{100 * v:.1f}")
        rows.append(row)
    return Section("Per-class IoU (%)", tables=[(header, rows)])


def summary_section(summary: dict[str, Any]) -> Section:
    rows = [[label, "-" if summary.get(k) is None else f"{summary[k]:.2f}"] for k, label in SUMMARY_ROWS]
    if summary.get("wsss_over_full") is not None:
        rows.append(["WSSS / fully supervised", f"{summary['wsss_over_full']:.3f}"])
    if summary.get("seed_cam_threshold") is not None:
        rows.append(["seed CAM best threshold", f"{summary['seed_cam_threshold']:.2f}"])
    times = [[name, f"{sec:.1f}"] for name, sec in summary.get("stage_seconds", {}).items() if sec is not None]
    return Section("Summary", tables=[(["result", "mIoU %"], rows), (["stage", "seconds"], times)])


def run_report(cfg: RunConfig, summary: dict[str, Any]) -> Path:
    report_dir = cfg.out_dir / "report"
    with stage(cfg.out_dir, "report"):
        sections = [summary_section(summary), per_class_section(cfg), plots_section(cfg, report_dir),
                    cam_overlay_section(cfg, report_dir), mask_panel_section(cfg, report_dir),
                    segmentation_panel_section(cfg, report_dir)]
        index = write_report(report_dir, f"wsss report: {cfg.out}", [s for s in sections if s is not None])
    return index
