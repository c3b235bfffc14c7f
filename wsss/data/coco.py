"""MS COCO 2014 through pycocotools: instance annotations -> 81-class semantic masks, cached as PNG."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
from tqdm import tqdm

from wsss.data.base import SegDataset
from wsss.data.palette import IGNORE_INDEX, write_mask
from wsss.errors import DataError
from wsss.io import atomic_write_json

log = logging.getLogger(__name__)

LAYOUT = """expected layout:
  ROOT/train2014/COCO_train2014_<12 digits>.jpg
  ROOT/val2014/COCO_val2014_<12 digits>.jpg
  ROOT/annotations/instances_train2014.json, instances_val2014.json
Get them from the COCO 2014 downloads (train2014.zip, val2014.zip, annotations_trainval2014.zip)."""


def instances_to_mask(coco, image_info: dict, cat_to_class: dict[int, int]) -> np.ndarray:
    """Semantic mask uint8 [H, W] of one image: later instances overwrite earlier ones, crowd -> 255 last."""
    h, w = image_info["height"], image_info["width"]
    mask = np.zeros((h, w), np.uint8)
    anns = coco.loadAnns(coco.getAnnIds(imgIds=image_info["id"], iscrowd=None))
    for ann in (a for a in anns if not a.get("iscrowd", 0)):
        mask[coco.annToMask(ann).astype(bool)] = cat_to_class[ann["category_id"]]
    for ann in (a for a in anns if a.get("iscrowd", 0)):
        mask[coco.annToMask(ann).astype(bool)] = IGNORE_INDEX
    return mask


class COCODataset(SegDataset):
    """A split (``train``/``val``) of MS COCO 2014 with 81 classes (background 0, categories 1..80 in
    sorted category-id order). Masks are converted once (progress bar, resumable) to
    ``ROOT/SegmentationClass/<split>2014/<id>.png``; labels are cached as ``<split>2014_labels.json``."""

    def __init__(self, root: str | Path, split: str, mask_dir: str | Path | None = None,
                 skip_bad_images: bool = False):
        self.root = Path(root)
        self.split = split
        self.folder = f"{split}2014"
        ann_file = self.root / "annotations" / f"instances_{self.folder}.json"
        if not (self.root / self.folder).is_dir() or not ann_file.is_file():
            missing = self.root / self.folder if not (self.root / self.folder).is_dir() else ann_file
            raise DataError(f"{missing}: not found (COCO 2014 split {split!r})\n{LAYOUT}")
        self.mask_dir = Path(mask_dir) if mask_dir is not None else None
        self.gt_dir = self.root / "SegmentationClass" / self.folder
        labels_cache = self.root / "SegmentationClass" / f"{self.folder}_labels.json"
        if labels_cache.is_file() and self._complete(labels_cache):
            data = json.loads(labels_cache.read_text())
        else:
            data = self._convert(ann_file, labels_cache)
        self.class_names = data["class_names"]
        self.ids = data["ids"]
        self._labels = {i: np.asarray(v, np.int64) for i, v in zip(self.ids, data["labels"])}
        if skip_bad_images:
            self.drop_unreadable()

    def _complete(self, labels_cache: Path) -> bool:
        data = json.loads(labels_cache.read_text())
        return all((self.gt_dir / f"{i}.png").is_file() for i in data["ids"])

    def _convert(self, ann_file: Path, labels_cache: Path) -> dict:
        from pycocotools.coco import COCO

        coco = COCO(str(ann_file))
        cat_ids = sorted(coco.getCatIds())
        cat_to_class = {c: i + 1 for i, c in enumerate(cat_ids)}
        class_names = ["background"] + [coco.loadCats(c)[0]["name"] for c in cat_ids]
        ids, labels = [], []
        for img_id in tqdm(sorted(coco.getImgIds()), desc=f"COCO {self.folder} masks", unit="img"):
            info = coco.loadImgs(img_id)[0]
            image_id = Path(info["file_name"]).stem
            target = self.gt_dir / f"{image_id}.png"
            if not target.is_file():
                write_mask(target, instances_to_mask(coco, info, cat_to_class))
            anns = coco.loadAnns(coco.getAnnIds(imgIds=img_id, iscrowd=False))
            ids.append(image_id)
            labels.append(sorted({cat_to_class[a["category_id"]] for a in anns}))
        data = {"class_names": class_names, "ids": ids, "labels": labels}
        atomic_write_json(labels_cache, data)
        return data

    def image_path(self, image_id: str) -> Path:
        return self.root / self.folder / f"{image_id}.jpg"

    def mask_path(self, image_id: str) -> Path | None:
        return (self.mask_dir or self.gt_dir) / f"{image_id}.png"

    def labels(self, image_id: str) -> np.ndarray:
        return self._labels[image_id]
