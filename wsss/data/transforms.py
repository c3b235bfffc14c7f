"""Albumentations pipelines applied jointly to image and mask (mask padding = 255, ignore)."""

from __future__ import annotations

import random
from collections.abc import Sequence

import albumentations as A
import cv2
import numpy as np
import torch

from wsss.data.palette import IGNORE_INDEX


def train_transform(crop_size: int, mean: Sequence[float], std: Sequence[float],
                    scale_range: tuple[float, float] = (0.5, 2.0), hflip: bool = True,
                    color_jitter: float = 0.0, seed: int | None = None) -> A.Compose:
    """Random rescale, pad (image 0, mask 255) to the crop, random crop, flip, colour jitter, normalise.

    All transforms draw from one shared generator (``seed``; training replaces it per sample, see
    :class:`~wsss.data.torch_dataset.SegTorchDataset`). Albumentations' own ``seed=`` gives every
    transform a generator with the same seed, which correlates their draws (the flip decision with the
    scale, the crop position with both)."""
    low, high = scale_range
    ops = [
        A.RandomScale(scale_limit=(low - 1.0, high - 1.0), interpolation=cv2.INTER_LINEAR,
                      mask_interpolation=cv2.INTER_NEAREST, p=1.0),
        A.PadIfNeeded(min_height=crop_size, min_width=crop_size, border_mode=cv2.BORDER_CONSTANT,
                      fill=0, fill_mask=IGNORE_INDEX),
        A.RandomCrop(crop_size, crop_size),
    ]
    if hflip:
        ops.append(A.HorizontalFlip(p=0.5))
    if color_jitter > 0:
        ops.append(A.ColorJitter(brightness=color_jitter, contrast=color_jitter, saturation=color_jitter,
                                 hue=min(0.5, color_jitter / 4), p=0.8))
    ops.append(A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=255.0))
    compose = A.Compose(ops)
    generator = np.random.default_rng(seed)
    compose.set_random_state(generator, random.Random(int(generator.integers(2**63))))
    return compose


def eval_transform(mean: Sequence[float], std: Sequence[float], size: int | None = None) -> A.Compose:
    """Normalise only (full image), or resize to ``size`` x ``size`` first (classification val)."""
    ops = []
    if size is not None:
        ops.append(A.Resize(size, size, interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST))
    ops.append(A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=255.0))
    return A.Compose(ops)


def to_tensors(image: np.ndarray, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """float [H, W, 3] -> [3, H, W] float32; uint8 [H, W] -> int64 [H, W]."""
    return (torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float(),
            torch.from_numpy(np.ascontiguousarray(mask)).long())


def normalise_image(image: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 [H, W, 3] -> float32 [3, H, W] on [0, 1] normalised with ``mean``/``std`` (inference inputs)."""
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div(255.0)
    return (x - torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)) / torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
