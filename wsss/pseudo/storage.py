"""CAM files: ``<id>.npz`` with ``cams`` float16 [K, H, W] (positive classes, original resolution, in
[0, 1]) and ``class_ids`` int16 [K] (dataset ids). No pickled objects: loads never execute anything."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wsss.errors import DataError
from wsss.io import atomic_save_npz


def save_cams(path: str | Path, cams: np.ndarray, class_ids: np.ndarray) -> None:
    cams = np.asarray(cams)
    class_ids = np.asarray(class_ids)
    if cams.ndim != 3 or cams.shape[0] != class_ids.shape[0]:
        raise ValueError(f"{path}: cams must be [K, H, W] with K = len(class_ids); got {cams.shape}, {class_ids.shape}")
    if not np.isfinite(cams).all():
        raise ValueError(f"{path}: CAMs contain NaN or inf")
    atomic_save_npz(path, cams=cams.astype(np.float16), class_ids=class_ids.astype(np.int16))


def load_cams(path: str | Path, num_classes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(cams float32 [K, H, W], class_ids int64 [K]); invalid files raise :class:`DataError`, also
    class ids outside ``1..num_classes-1`` when ``num_classes`` (with background) is given."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            cams = data["cams"].astype(np.float32)
            class_ids = data["class_ids"].astype(np.int64)
    except FileNotFoundError as exc:
        raise DataError(f"{path}: CAM file not found; run `wsss cams` first") from exc
    except Exception as exc:
        raise DataError(f"{path}: not a wsss CAM file ({type(exc).__name__}: {exc}); regenerate it with "
                        "`wsss cams` (it remakes invalid files)") from exc
    if cams.ndim != 3 or cams.shape[0] != class_ids.shape[0]:
        raise DataError(f"{path}: cams {cams.shape} and class_ids {class_ids.shape} disagree (expected [K, H, W], [K])")
    if not np.isfinite(cams).all():
        raise DataError(f"{path}: CAMs contain NaN or inf values; regenerate it with `wsss cams` (it remakes "
                        "invalid files)")
    if num_classes is not None and ((class_ids < 1) | (class_ids >= num_classes)).any():
        raise DataError(f"{path}: class ids {class_ids.tolist()} outside this dataset's foreground classes "
                        f"1..{num_classes - 1}; these CAMs belong to another dataset (check data.name / data.root)")
    return cams, class_ids


def cam_file_ok(path: Path) -> bool:
    """Whether ``path`` is a complete, finite CAM file (a file that is not counts as not done)."""
    try:
        load_cams(path)
    except DataError:
        return False
    return True
