"""Streaming confusion matrix and the segmentation metrics derived from it (ignore = 255)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from wsss.data.palette import IGNORE_INDEX


class ConfusionMatrix:
    """``matrix[t, p]`` counts pixels of true class ``t`` predicted as ``p``; pixels whose target is
    ``ignore_index`` are left out. Update with numpy arrays or tensors of any matching shape."""

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX):
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, pred, target) -> None:
        if isinstance(pred, torch.Tensor):
            pred = pred.detach().cpu().numpy()
        if isinstance(target, torch.Tensor):
            target = target.detach().cpu().numpy()
        pred = np.asarray(pred).astype(np.int64).ravel()
        target = np.asarray(target).astype(np.int64).ravel()
        if pred.shape != target.shape:
            raise ValueError(f"prediction and target sizes differ: {pred.shape} vs {target.shape}")
        keep = target != self.ignore_index
        pred, target = pred[keep], target[keep]
        bad = (pred < 0) | (pred >= self.num_classes) | (target < 0) | (target >= self.num_classes)
        if bad.any():
            raise ValueError(f"labels outside 0..{self.num_classes - 1} (and not {self.ignore_index}): "
                             f"{np.unique(np.concatenate([pred[bad], target[bad]]))[:5]}")
        self.matrix += np.bincount(target * self.num_classes + pred,
                                   minlength=self.num_classes ** 2).reshape(self.num_classes, self.num_classes)

    def compute(self, class_names: list[str] | None = None) -> dict[str, Any]:
        """Per-class IoU/precision/recall (None where undefined), mIoU in percent over the classes
        present in the ground truth or the prediction, pixel accuracy in percent, and the foreground
        precision and recall in percent (pixels of a foreground class labelled with that class, over
        the foreground pixels predicted / in the ground truth; background is class 0)."""
        m = self.matrix.astype(np.float64)
        tp = np.diag(m)
        gt, pred = m.sum(1), m.sum(0)
        union = gt + pred - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = np.where(union > 0, tp / union, np.nan)
            precision = np.where(pred > 0, tp / pred, np.nan)
            recall = np.where(gt > 0, tp / gt, np.nan)
        total = m.sum()
        fg_tp, fg_pred, fg_gt = tp[1:].sum(), pred[1:].sum(), gt[1:].sum()

        def as_list(a):
            return [None if np.isnan(v) else float(v) for v in a]

        return {
            "miou": float(np.nanmean(iou) * 100) if np.isfinite(iou).any() else float("nan"),
            "pixel_accuracy": float(tp.sum() / total * 100) if total else float("nan"),
            "fg_precision": float(fg_tp / fg_pred * 100) if fg_pred else float("nan"),
            "fg_recall": float(fg_tp / fg_gt * 100) if fg_gt else float("nan"),
            "iou": as_list(iou), "precision": as_list(precision), "recall": as_list(recall),
            "class_names": list(class_names) if class_names else [str(i) for i in range(self.num_classes)],
            "pixels": int(total),
        }


def miou_table(result: dict[str, Any]) -> str:
    """Per-class IoU/precision/recall table (percent) with the mean and pixel accuracy."""
    lines = [f"{'class':<16}{'IoU':>8}{'prec':>8}{'recall':>8}", "-" * 40]

    def fmt(v):
        return f"{100 * v:8.2f}" if v is not None else f"{'-':>8}"

    for name, iou, p, r in zip(result["class_names"], result["iou"], result["precision"], result["recall"]):
        lines.append(f"{name:<16}{fmt(iou)}{fmt(p)}{fmt(r)}")
    lines.append("-" * 40)
    lines.append(f"{'mIoU':<16}{result['miou']:8.2f}")
    lines.append(f"{'pixel accuracy':<16}{result['pixel_accuracy']:8.2f}")
    return "\n".join(lines)
