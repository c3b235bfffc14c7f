"""Your own data: a folder of images with a CSV of image-level labels (layout in ``data/README.md``)."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np

from wsss.data.base import SegDataset
from wsss.errors import DataError

log = logging.getLogger("wsss")

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")

LAYOUT = """expected layout:
  ROOT/images/<id>.<jpg|png|bmp>
  ROOT/classes.txt              one class name per line, the first is background
  ROOT/labels.csv               header `image,labels`; labels = space-separated class names (empty = none)
  ROOT/masks/<id>.png           optional: index/palette PNG masks (255 = ignore), for evaluation
  ROOT/splits/{train,val}.txt   optional: image ids per split (default: seeded 80/20 split)"""


def read_class_names(path: Path) -> list[str]:
    """Class names of ``classes.txt``, one per line (background first); UTF-8 with or without BOM."""
    names = []
    first_line: dict[str, int] = {}
    for line_number, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        name = line.strip()
        if not name:
            continue
        if name in first_line:
            raise DataError(f"{path}, line {line_number}: class {name!r} already named on line "
                            f"{first_line[name]}; every class needs one line of its own")
        if any(c in name for c in ", \t"):
            raise DataError(f"{path}, line {line_number}: class name {name!r} contains a comma or a space; put "
                            "one class per line and write multi-word names with '_' (e.g. potted_plant)")
        first_line[name] = line_number
        names.append(name)
    if len(names) < 2:
        raise DataError(f"{path}: needs background plus at least one class")
    return names


def read_labels(csv_path: Path, index: dict[str, int], images: dict[str, Path],
                image_dir: Path) -> dict[str, np.ndarray]:
    """``{image id: sorted foreground class ids}`` of ``labels.csv`` (header ``image,labels``; class names
    separated by spaces). Every mistake is an error naming the row: an unknown image or class, an extra
    column (a comma between class names), a second row for the same image."""
    labels: dict[str, np.ndarray] = {}
    rows: dict[str, int] = {}
    with csv_path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or [h.strip() for h in reader.fieldnames[:2]] != ["image", "labels"] \
                or len(reader.fieldnames) != 2:
            raise DataError(f"{csv_path}: header must be `image,labels`, got {reader.fieldnames}")
        for row_number, row in enumerate(reader, start=2):
            if row.get(None):
                raise DataError(f"{csv_path}, row {row_number}: more than two columns ({row.get(None)!r} left "
                                f"over); separate class names with spaces, e.g. `{row['image']},"
                                f"{' '.join([row['labels'] or '', *row[None]]).strip()}`")
            image_id = Path((row["image"] or "").strip()).stem
            if image_id not in images:
                raise DataError(f"{csv_path}, row {row_number}: image {row['image']!r} not found in {image_dir}")
            if image_id in rows:
                raise DataError(f"{csv_path}, row {row_number}: image {row['image']!r} already has row "
                                f"{rows[image_id]}; give each image one row with all its classes")
            rows[image_id] = row_number
            ids = []
            for name in (row["labels"] or "").split():
                if name not in index or index[name] == 0:
                    raise DataError(f"{csv_path}, row {row_number}: unknown class name {name!r}; known "
                                    f"foreground classes: {list(index)[1:]} (classes.txt)")
                ids.append(index[name])
            labels[image_id] = np.array(sorted(set(ids)), dtype=np.int64)
    return labels


class FolderDataset(SegDataset):
    """A split of a custom folder dataset.

    Args:
        root: the dataset folder.
        split: ``train``/``val`` (or any ``splits/<split>.txt``).
        mask_dir: read masks from ``<mask_dir>/<id>.png`` instead of ``ROOT/masks``.
        skip_bad_images: drop unreadable images (logged).
        val_fraction: share of images in ``val`` when there are no split files.
        seed: seed of that split.
    """

    def __init__(self, root: str | Path, split: str, mask_dir: str | Path | None = None,
                 skip_bad_images: bool = False, val_fraction: float = 0.2, seed: int = 0):
        self.root = Path(root)
        self.split = split
        self.mask_dir = Path(mask_dir) if mask_dir is not None else self.root / "masks"
        for required in (self.root / "images", self.root / "classes.txt", self.root / "labels.csv"):
            if not required.exists():
                raise DataError(f"{required}: not found\n{LAYOUT}")
        self.class_names = read_class_names(self.root / "classes.txt")
        index = {name: i for i, name in enumerate(self.class_names)}
        self._images = {p.stem: p for p in sorted((self.root / "images").iterdir())
                        if p.suffix.lower() in IMAGE_SUFFIXES}
        self._labels = read_labels(self.root / "labels.csv", index, self._images, self.root / "images")
        unlabelled = sorted(set(self._images) - set(self._labels))
        if unlabelled:
            log.warning("%s: %d images have no row in %s and are not used, e.g. %s; add a row with empty "
                        "labels (`%s,`) for an image without foreground classes", self.root / "images",
                        len(unlabelled), self.root / "labels.csv", unlabelled[:3], unlabelled[0])
        self.ids = self._split_ids(split, val_fraction, seed)
        if skip_bad_images:
            self.drop_unreadable()

    def _split_ids(self, split: str, val_fraction: float, seed: int) -> list[str]:
        split_file = self.root / "splits" / f"{split}.txt"
        if split_file.is_file():
            ids = [line.strip() for line in split_file.read_text().splitlines() if line.strip()]
            missing = [i for i in ids if i not in self._labels]
            if missing:
                raise DataError(f"{split_file}: ids without a labels.csv row: {missing[:5]}")
            return ids
        if (self.root / "splits").is_dir():
            raise DataError(f"{split_file}: split file not found\n{LAYOUT}")
        if split not in ("train", "val"):
            raise DataError(f"{self.root}: split {split!r} needs {split_file}; without split files only train/val exist")
        ids = sorted(self._labels)
        order = np.random.default_rng(seed).permutation(len(ids))
        n_val = int(round(len(ids) * val_fraction))
        chosen = order[:n_val] if split == "val" else order[n_val:]
        return [ids[i] for i in sorted(chosen)]

    def image_path(self, image_id: str) -> Path:
        return self._images[image_id]

    def mask_path(self, image_id: str) -> Path | None:
        p = self.mask_dir / f"{image_id}.png"
        return p if p.is_file() or self.mask_dir != self.root / "masks" else None

    def labels(self, image_id: str) -> np.ndarray:
        return self._labels[image_id]
