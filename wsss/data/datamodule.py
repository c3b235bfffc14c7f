"""The LightningDataModule every training stage uses (classification or segmentation)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from wsss.data import build_dataset
from wsss.data.sampling import StepBatchSampler
from wsss.data.torch_dataset import SegTorchDataset
from wsss.data.transforms import eval_transform, train_transform
from wsss.errors import ConfigError
from wsss.processes import loader_worker_init_fn

log = logging.getLogger("wsss")


class WSSSDataModule(pl.LightningDataModule):
    """Train/val/predict loaders for one dataset.

    Args:
        dataset, root, dataset_kwargs: passed to :func:`wsss.data.build_dataset`.
        train_split, val_split: splits of the train and val loaders.
        task: ``cls`` (image-level labels; val images resized to the crop) or ``seg`` (masks
            required for training; val on full images, batch 1).
        mask_dir: train on masks from this folder (pseudo masks) instead of the ground truth.
        crop_size, scale_range, batch_size, num_workers, mean, std: loader and augmentation settings.
        seed: seed of the augmentation pipeline.
    """

    def __init__(self, dataset: str, root: str, train_split: str = "train", val_split: str = "val",
                 task: str = "cls", crop_size: int = 128, batch_size: int = 16, num_workers: int = 0,
                 mean: Sequence[float] = (0.485, 0.456, 0.406), std: Sequence[float] = (0.229, 0.224, 0.225),
                 scale_range: tuple[float, float] = (0.5, 2.0), mask_dir: str | None = None,
                 dataset_kwargs: dict[str, Any] | None = None, seed: int = 0):
        super().__init__()
        if task not in ("cls", "seg"):
            raise ConfigError(f"task must be 'cls' or 'seg', got {task!r}")
        self.dataset, self.root, self.task = dataset, root, task
        self.train_split, self.val_split = train_split, val_split
        self.crop_size, self.batch_size, self.num_workers = crop_size, batch_size, num_workers
        self.mean, self.std, self.scale_range = tuple(mean), tuple(std), tuple(scale_range)
        self.mask_dir, self.kwargs, self.seed = mask_dir, dict(dataset_kwargs or {}), seed

    def _split(self, split: str, mask_dir: str | None = None):
        kwargs = dict(self.kwargs)
        if mask_dir is not None:
            kwargs["mask_dir"] = mask_dir
        return build_dataset(self.dataset, self.root, split, **kwargs)

    def train_dataset(self) -> SegTorchDataset:
        ds = self._split(self.train_split, self.mask_dir)
        transform = train_transform(self.crop_size, self.mean, self.std, self.scale_range)
        torch_ds = SegTorchDataset(ds, transform, require_masks=self.task == "seg", seed=self.seed)
        empty = torch_ds.empty_label_ids() if self.task == "cls" else []
        if empty:
            log.warning("%d training images of %s have no foreground label (kept as negatives), e.g. %s",
                        len(empty), self.train_split, empty[:3])
        return torch_ds

    def val_dataset(self) -> SegTorchDataset:
        ds = self._split(self.val_split)
        if self.task == "cls":
            return SegTorchDataset(ds, eval_transform(self.mean, self.std, size=self.crop_size))
        return SegTorchDataset(ds, eval_transform(self.mean, self.std), require_masks=True)

    def _global_step(self) -> int:
        trainer = getattr(self, "trainer", None)
        return int(trainer.global_step) if trainer is not None else 0

    def train_dataloader(self) -> DataLoader:
        """Batches fixed by (seed, step) (:class:`~wsss.data.sampling.StepBatchSampler`); the loader's
        own generator keeps its worker seeding off the global RNG the model uses."""
        dataset = self.train_dataset()
        if len(dataset) < self.batch_size:
            raise ConfigError(f"batch_size {self.batch_size} is larger than the {len(dataset)} images of split "
                              f"{self.train_split!r}; lower the batch size")
        sampler = StepBatchSampler(len(dataset), self.batch_size, self.seed, start_step=self._global_step)
        return DataLoader(dataset, batch_sampler=sampler, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0, worker_init_fn=loader_worker_init_fn(),
                          generator=torch.Generator().manual_seed(self.seed))

    def val_dataloader(self) -> DataLoader:
        batch = self.batch_size if self.task == "cls" else 1
        return DataLoader(self.val_dataset(), batch_size=batch, shuffle=False, num_workers=self.num_workers,
                          worker_init_fn=loader_worker_init_fn(), generator=torch.Generator().manual_seed(self.seed))
