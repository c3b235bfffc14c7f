"""Datasets (VOC, COCO, custom folder, built-in synthetic), transforms and the Lightning data module.

``DATASETS`` maps a config name to its class; :func:`build_dataset` instantiates one split.
"""

from __future__ import annotations

from typing import Any

from wsss.data.base import SegDataset
from wsss.data.coco import COCODataset
from wsss.data.folder import FolderDataset
from wsss.data.synthetic import SyntheticDataset
from wsss.data.voc import VOCDataset
from wsss.errors import ConfigError

DATASETS: dict[str, type[SegDataset]] = {
    "voc": VOCDataset,
    "coco": COCODataset,
    "folder": FolderDataset,
    "synthetic": SyntheticDataset,
}


def build_dataset(name: str, root: str, split: str, **kwargs: Any) -> SegDataset:
    """Split ``split`` of dataset family ``name`` at ``root``."""
    if name not in DATASETS:
        raise ConfigError(f"data.name: unknown dataset {name!r}; choose one of {sorted(DATASETS)}")
    try:
        return DATASETS[name](root, split, **kwargs)
    except TypeError as exc:
        raise ConfigError(f"data.kwargs: invalid option for dataset {name!r}: {exc}") from exc


__all__ = ["DATASETS", "SegDataset", "build_dataset"]
