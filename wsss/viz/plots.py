"""Plots written as PNG (matplotlib, Agg backend): confusion matrix, per-class IoU, threshold curve."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from wsss.io import atomic_path  # noqa: E402


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_confusion(matrix: np.ndarray, class_names: list[str], path: Path, title: str = "") -> Path:
    """Row-normalised confusion matrix (true class per row) as a heat map."""
    m = matrix.astype(np.float64)
    rows = m / np.maximum(m.sum(1, keepdims=True), 1)
    n = len(class_names)
    fig, ax = plt.subplots(figsize=(0.45 * n + 2.5, 0.45 * n + 2))
    im = ax.imshow(rows, cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(n), class_names, rotation=90, fontsize=7)
    ax.set_yticks(range(n), class_names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "confusion matrix (row-normalised)")
    fig.colorbar(im, ax=ax, fraction=0.046)
    return _save(fig, path)


def plot_class_iou(result: dict[str, Any], path: Path, title: str = "") -> Path:
    """Horizontal bars of per-class IoU (percent), the mean as a line."""
    names, ious = result["class_names"], [100 * (v or 0.0) for v in result["iou"]]
    fig, ax = plt.subplots(figsize=(6, 0.28 * len(names) + 1.2))
    ax.barh(range(len(names)), ious, color="#4c72b0")
    ax.axvline(result["miou"], color="#c44e52", linestyle="--", label=f"mIoU {result['miou']:.1f}")
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("IoU (%)")
    ax.set_title(title or "per-class IoU")
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def plot_threshold_curve(thresholds: list[float], mious: list[float], path: Path, title: str = "") -> Path:
    """mIoU vs background threshold, the best point marked."""
    best = int(np.nanargmax(mious))
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(thresholds, mious, marker="o", markersize=3)
    ax.scatter([thresholds[best]], [mious[best]], color="#c44e52", zorder=3,
               label=f"best {thresholds[best]:.2f}: {mious[best]:.1f}")
    ax.set_xlabel("background threshold")
    ax.set_ylabel("mIoU (%)")
    ax.set_title(title or "seed CAM mIoU vs background threshold")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_grouped_bars(groups: list[str], series: dict[str, list[float | None]], path: Path, ylabel: str = "",
                      title: str = "") -> Path:
    """One group of bars per entry of ``groups``, one bar (and colour) per series; missing values are gaps."""
    n = max(1, len(series))
    width = 0.8 / n
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(groups) * max(1.0, n / 3)), 4))
    x = np.arange(len(groups))
    for i, (name, values) in enumerate(series.items()):
        heights = [np.nan if v is None else v for v in values]
        bars = ax.bar(x - 0.4 + width * (i + 0.5), heights, width, label=name)
        for bar, h in zip(bars, heights):
            if np.isfinite(h):
                ax.text(bar.get_x() + bar.get_width() / 2, h, f"{h:.1f}", ha="center", va="bottom", fontsize=6)
    ax.set_xticks(x)
    ax.set_xticklabels(groups)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=min(n, 4), loc="upper left", bbox_to_anchor=(0, -0.1))
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)
