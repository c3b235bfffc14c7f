"""``DIR/index.html``: the leaderboard, its plot, a link to each entry's report and the same CAM
overlays of the same images side by side across entries."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from wsss.config import RunConfig
from wsss.io import atomic_path
from wsss.pseudo.storage import load_cams
from wsss.stages.common import dataset_for
from wsss.stages.report import example_ids
from wsss.viz.overlay import mask_rgb, overlay_cam, panel
from wsss.viz.report import Section, write_report

N_IMAGES = 4


def _save_png(array: np.ndarray, path: Path) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


def overlay_section(out: Path, entries: list[tuple[str, RunConfig]]) -> Section | None:
    """Per example image of the first entry's CAM split: the image, its ground truth and each entry's
    exported CAM (maximum over the image's classes), one panel per image."""
    with_cams = [(name, cfg) for name, cfg in entries if (cfg.out_dir / "cams").is_dir()]
    if not with_cams:
        return None
    dataset = dataset_for(with_cams[0][1], with_cams[0][1].data.cam_split)
    section = Section("CAM overlays across entries",
                      note="The exported multi-scale CAMs (OUT/cams) of each entry, maximum over the image's "
                           "classes, on the same images.")
    for image_id in example_ids(dataset.ids, N_IMAGES):
        image = dataset.load_image(image_id)
        tiles, titles = [image], ["image"]
        if dataset.has_masks():
            tiles.append(mask_rgb(dataset.load_mask(image_id)))
            titles.append("ground truth")
        for name, cfg in with_cams:
            path = cfg.out_dir / "cams" / f"{image_id}.npz"
            if not path.is_file():
                continue
            cams, _ = load_cams(path)
            heat = cams.max(0) if cams.shape[0] else np.zeros(image.shape[:2], np.float32)
            tiles.append(overlay_cam(image, heat))
            titles.append(name)
        target = out / "overlays" / f"{image_id}.png"
        _save_png(panel(tiles, titles), target)
        names = ", ".join(dataset.class_names[c] for c in dataset.labels(image_id))
        section.figures.append((f"overlays/{target.name}", f"{image_id}: {names}"))
    return section


def write_page(out: Path, leaderboard: dict[str, Any], entries: list[tuple[str, RunConfig]]) -> Path:
    """Write ``out/index.html`` (figures under ``out/overlays``)."""
    header = ["entry"] + [c["label"] for c in leaderboard["columns"]]
    rows = []
    for row in leaderboard["rows"]:
        cells = [row["entry"]]
        for c in leaderboard["columns"]:
            v = row.get(c["key"])
            mark = " *" if row["entry"] in leaderboard["best"].get(c["key"], []) else ""
            cells.append("-" if v is None else (f"{v:.2f}" if isinstance(v, float) else str(v)) + mark)
        rows.append(cells)
    sections = [Section("Leaderboard", note="* = best of the column.", tables=[(header, rows)],
                        figures=[("leaderboard.png", "quality columns per entry")])]
    links = Section("Entry reports")
    for name, cfg in entries:
        report = cfg.out_dir / "report" / "index.html"
        if report.is_file():
            links.links.append((os.path.relpath(report, out), f"{name}: {cfg.out_dir}/report/index.html"))
    if links.links:
        sections.append(links)
    overlays = overlay_section(out, entries)
    if overlays is not None:
        sections.append(overlays)
    return write_report(out, f"wsss compare: {out}", sections)
