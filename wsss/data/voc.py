"""PASCAL VOC 2012 (with SBD's SegmentationClassAug for ``train_aug``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from wsss.data.base import SegDataset
from wsss.data.palette import IGNORE_INDEX, read_mask
from wsss.errors import DataError
from wsss.io import atomic_write_json

VOC_CLASSES = [
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
]

EXPECTED_TREE = """expected layout:
  ROOT/VOCdevkit/VOC2012/
    JPEGImages/<id>.jpg
    SegmentationClass/<id>.png            (train, val: 1,464 + 1,449 masks)
    SegmentationClassAug/<id>.png         (train_aug: SBD's 10,582 augmented masks)
    ImageSets/Segmentation/{train,val,train_aug}.txt
Get VOC 2012 from the PASCAL VOC site (VOCtrainval_11-May-2012.tar) and SegmentationClassAug
(with train_aug.txt) from the SBD augmentation release used by DeepLab/IRN; see data/README.md."""

MASK_FOLDER = {"train_aug": "SegmentationClassAug"}


def find_voc_root(root: str | Path) -> Path:
    """The ``VOC2012`` folder under ``root`` (``root`` itself, ``root/VOC2012`` or ``root/VOCdevkit/VOC2012``)."""
    root = Path(root)
    for candidate in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (candidate / "JPEGImages").is_dir():
            return candidate
    raise DataError(f"{root}: no PASCAL VOC folder found (no JPEGImages/ under it)\n{EXPECTED_TREE}")


class VOCDataset(SegDataset):
    """A split of PASCAL VOC 2012, or of any dataset written in its layout (the synthetic one).

    Args:
        root: the folder holding ``VOCdevkit`` (or the ``VOC2012`` folder itself).
        split: ``train``, ``train_aug``, ``val`` or any list file in ``ImageSets/Segmentation``.
        class_names: class names, background first (default the 21 VOC classes).
        mask_dir: read masks from ``<mask_dir>/<id>.png`` instead (e.g. pseudo masks).
        skip_bad_images: drop unreadable images (logged) instead of raising when they are read.

    Image-level labels are derived from the ground-truth masks once and cached as
    ``ImageSets/Segmentation/<split>_labels.json`` next to the list file.
    """

    def __init__(self, root: str | Path, split: str, class_names: list[str] | None = None,
                 mask_dir: str | Path | None = None, skip_bad_images: bool = False):
        self.voc = find_voc_root(root)
        self.root = self.voc
        self.split = split
        self.class_names = list(class_names or VOC_CLASSES)
        self.mask_dir = Path(mask_dir) if mask_dir is not None else None
        list_file = self.voc / "ImageSets" / "Segmentation" / f"{split}.txt"
        if not list_file.is_file():
            raise DataError(f"{list_file}: split list for {split!r} not found\n{EXPECTED_TREE}")
        self.ids = [line.split()[0] for line in list_file.read_text().splitlines() if line.strip()]
        if not self.ids:
            raise DataError(f"{list_file}: split list is empty")
        self.gt_mask_folder = self.voc / MASK_FOLDER.get(split, "SegmentationClass")
        if not self.gt_mask_folder.is_dir() and split == "train_aug":
            raise DataError(f"{self.gt_mask_folder}: SBD's SegmentationClassAug is needed for train_aug\n{EXPECTED_TREE}")
        self._labels = self._load_or_derive_labels(list_file)
        if skip_bad_images:
            self.drop_unreadable()

    def image_path(self, image_id: str) -> Path:
        return self.voc / "JPEGImages" / f"{image_id}.jpg"

    def gt_mask_path(self, image_id: str) -> Path:
        return self.gt_mask_folder / f"{image_id}.png"

    def mask_path(self, image_id: str) -> Path | None:
        if self.mask_dir is not None:
            return self.mask_dir / f"{image_id}.png"
        return self.gt_mask_path(image_id)

    def labels(self, image_id: str) -> np.ndarray:
        return self._labels[image_id]

    def _load_or_derive_labels(self, list_file: Path) -> dict[str, np.ndarray]:
        cache = list_file.with_name(f"{self.split}_labels.json")
        if cache.is_file():
            data = json.loads(cache.read_text())
            if data.get("ids") == self.ids and data.get("num_classes") == self.num_classes:
                return {i: np.asarray(v, dtype=np.int64) for i, v in zip(self.ids, data["labels"])}
        labels = []
        for image_id in self.ids:
            path = self.gt_mask_path(image_id)
            if not path.is_file():
                raise DataError(f"{path}: ground-truth mask of image {image_id!r} (split {self.split!r}) not found; "
                                f"image-level labels are derived from the masks\n{EXPECTED_TREE}")
            present = np.unique(read_mask(path, self.num_classes))
            labels.append([int(c) for c in present if c not in (0, IGNORE_INDEX)])
        atomic_write_json(cache, {"ids": self.ids, "num_classes": self.num_classes, "labels": labels})
        return {i: np.asarray(v, dtype=np.int64) for i, v in zip(self.ids, labels)}
