"""Torch view of a :class:`~wsss.data.base.SegDataset`: sample dicts for Lightning modules."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from wsss.data.base import SegDataset
from wsss.data.palette import IGNORE_INDEX
from wsss.data.sampling import decode_index, sample_generator
from wsss.data.transforms import to_tensors
from wsss.errors import DataError


class SegTorchDataset(Dataset):
    """Samples ``{"image" [3,H,W] float, "label" [C-1] multi-hot, "mask" [H,W] int64, "id", "size"}``.

    ``mask`` is all 255 when the image has no mask and ``require_masks`` is False; with
    ``require_masks`` a missing mask is an error naming the image.

    With ``seed`` (training) indices are encoded ``(epoch, index)`` pairs (:mod:`wsss.data.sampling`)
    and the random transform draws from that sample's own generator, so augmentations do not depend on
    the loader's workers or on where a resumed run started.
    """

    def __init__(self, dataset: SegDataset, transform, require_masks: bool = False, seed: int | None = None):
        self.dataset = dataset
        self.transform = transform
        self.require_masks = require_masks
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)

    def empty_label_ids(self) -> list[str]:
        """Ids of images with no foreground class (legal, but they teach the classifier nothing positive)."""
        return [i for i in self.dataset.ids if len(self.dataset.labels(i)) == 0]

    def __getitem__(self, index: int) -> dict[str, Any]:
        if self.seed is not None:
            epoch, index = decode_index(index, len(self.dataset))
            generator = sample_generator(self.seed, epoch, index)
            self.transform.set_random_state(generator, random.Random(int(generator.integers(2**63))))
        image_id = self.dataset.ids[index]
        image = self.dataset.load_image(image_id)
        path = self.dataset.mask_path(image_id)
        if self.require_masks or (path is not None and path.is_file()):
            mask = self.dataset.load_mask(image_id)
            if mask.shape != image.shape[:2]:
                raise DataError(f"{path}: mask size {mask.shape} differs from its image {image.shape[:2]} "
                                f"({self.dataset.image_path(image_id)})")
        else:
            mask = np.full(image.shape[:2], IGNORE_INDEX, np.uint8)
        out = self.transform(image=image, mask=mask)
        x, y = to_tensors(out["image"], out["mask"])
        return {"image": x, "mask": y, "label": torch.from_numpy(self.dataset.label_vector(image_id)),
                "id": image_id, "size": torch.tensor(image.shape[:2])}
