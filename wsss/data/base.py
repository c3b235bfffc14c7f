"""The dataset interface every source (VOC, COCO, custom folder, synthetic) implements.

Class index 0 is background and 255 is ignore, as in VOC. Image-level labels are the *foreground*
class ids present (1..num_classes-1); classifiers predict ``num_classes - 1`` logits, logit ``j`` for
dataset class ``j + 1``.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np
from PIL import Image

from wsss.data.palette import read_mask
from wsss.errors import DataError

log = logging.getLogger(__name__)


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as RGB uint8 [H, W, 3]; a corrupt or unreadable file raises :class:`DataError`."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
    except FileNotFoundError as exc:
        raise DataError(f"{path}: image file not found") from exc
    except Exception as exc:
        raise DataError(f"{path}: cannot read image ({type(exc).__name__}: {exc}); "
                        "re-export the file or set data.skip_bad_images=true to skip and log it") from exc


class SegDataset(ABC):
    """A split of a segmentation dataset with image-level labels and (optionally) pixel masks.

    Subclasses set ``root``, ``split``, ``class_names`` (index 0 = background) and ``ids`` and
    implement the path and label accessors. ``skip_bad_images`` drops unreadable images from ``ids``
    (logging each one) instead of raising when they are first read.
    """

    root: Path
    split: str
    class_names: list[str]
    ids: list[str]
    dropped_ids: list[str] = []

    @property
    def num_classes(self) -> int:
        """Number of classes including background."""
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.ids)

    @abstractmethod
    def image_path(self, image_id: str) -> Path: ...

    @abstractmethod
    def mask_path(self, image_id: str) -> Path | None:
        """Path of the ground-truth mask, or None when the dataset has none for this image."""

    @abstractmethod
    def labels(self, image_id: str) -> np.ndarray:
        """Foreground class ids present in the image, int64 [k], sorted, values in 1..num_classes-1."""

    def has_masks(self) -> bool:
        return all(self.mask_path(i) is not None and self.mask_path(i).is_file() for i in self.ids[:1])

    def load_image(self, image_id: str) -> np.ndarray:
        return read_image(self.image_path(image_id))

    def load_mask(self, image_id: str) -> np.ndarray:
        """Ground-truth mask uint8 [H, W]; an image without one raises :class:`DataError`."""
        p = self.mask_path(image_id)
        if p is None or not p.is_file():
            raise DataError(
                f"image {image_id!r} of split {self.split!r} has no ground-truth mask"
                f"{'' if p is None else f' (expected {p})'}; this step needs masks for every image of the split"
            )
        return read_mask(p, self.num_classes)

    def label_vector(self, image_id: str) -> np.ndarray:
        """Multi-hot float32 [num_classes - 1] over foreground classes."""
        vec = np.zeros(self.num_classes - 1, dtype=np.float32)
        vec[self.labels(image_id) - 1] = 1.0
        return vec

    def drop_unreadable(self) -> list[str]:
        """Decode every image once, drop unreadable ones (also truncated files) from ``ids`` and
        return the dropped ids (kept as ``dropped_ids``)."""
        bad = []
        for image_id in self.ids:
            path = self.image_path(image_id)
            if not _readable(path):
                log.warning("skipping unreadable image %s (data.skip_bad_images)", path)
                bad.append(image_id)
        if bad:
            dropped = set(bad)
            self.ids = [i for i in self.ids if i not in dropped]
        self.dropped_ids = bad
        return bad


_READABLE: dict[tuple[str, int, int], bool] = {}


def _readable(path: Path) -> bool:
    """Whether ``path`` decodes completely; remembered per (path, size, mtime) within the process, as
    every stage builds its datasets more than once."""
    try:
        st = path.stat()
    except OSError:
        return False
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _READABLE:
        try:
            read_image(path)
            _READABLE[key] = True
        except DataError:
            _READABLE[key] = False
    return _READABLE[key]
