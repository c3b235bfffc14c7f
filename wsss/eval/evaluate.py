"""mIoU of a folder of predicted masks against a dataset split's ground truth."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from wsss.data.base import SegDataset
from wsss.data.palette import read_mask
from wsss.errors import DataError
from wsss.eval.miou import ConfusionMatrix, miou_table
from wsss.io import atomic_write_json
from wsss.viz.plots import plot_class_iou, plot_confusion


def evaluate_masks(pred_dir: str | Path, dataset: SegDataset, out_dir: str | Path | None = None,
                   print_table: bool = True, progress: bool = False) -> dict[str, Any]:
    """Compare ``pred_dir/<id>.png`` with the ground truth of every image of ``dataset``.

    With ``out_dir``: ``metrics.json`` (with the confusion matrix), ``class_iou.png`` and
    ``confusion.png`` are written there. A missing prediction or a size mismatch is an error.
    """
    pred_dir = Path(pred_dir)
    cm = ConfusionMatrix(dataset.num_classes)
    for image_id in tqdm(dataset.ids, desc=f"evaluate {pred_dir.name}", unit="img", disable=not progress):
        path = pred_dir / f"{image_id}.png"
        if not path.is_file():
            raise DataError(f"{path}: no prediction for image {image_id!r} of split {dataset.split!r}")
        pred = read_mask(path, dataset.num_classes)
        gt = dataset.load_mask(image_id)
        if pred.shape != gt.shape:
            raise DataError(f"{path}: prediction size {pred.shape} differs from the ground truth {gt.shape}")
        cm.update(pred, gt)
    result = cm.compute(dataset.class_names)
    result["confusion_matrix"] = cm.matrix.tolist()
    result["pred_dir"] = str(pred_dir)
    result["split"] = dataset.split
    if print_table:
        print(f"{pred_dir} vs ground truth of {dataset.split} ({len(dataset)} images)")
        print(miou_table(result))
    if out_dir is not None:
        out_dir = Path(out_dir)
        atomic_write_json(out_dir / "metrics.json", result)
        plot_class_iou(result, out_dir / "class_iou.png", title=f"per-class IoU: {pred_dir.name}")
        plot_confusion(np.asarray(cm.matrix), dataset.class_names, out_dir / "confusion.png",
                       title=f"confusion: {pred_dir.name}")
    return result
