"""What the stages share: the configured dataset, the training loaders of a config section, and the
per-image outputs made from a CAM folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from wsss.config import NetworkTrainingConfig, RunConfig
from wsss.data import build_dataset
from wsss.data.base import SegDataset
from wsss.data.datamodule import WSSSDataModule
from wsss.io import clean_stale_temps
from wsss.processes import loader_workers
from wsss.pseudo.labeler import check_cam_folder


def dataset_kwargs(cfg: RunConfig) -> dict[str, Any]:
    """Keyword arguments of the configured dataset class (``data.kwargs`` + ``data.skip_bad_images``)."""
    kwargs = dict(cfg.data.kwargs)
    if cfg.data.skip_bad_images:
        kwargs["skip_bad_images"] = True
    return kwargs


def dataset_for(cfg: RunConfig, split: str, mask_dir: str | Path | None = None) -> SegDataset:
    """The configured dataset's ``split`` (masks read from ``mask_dir`` when given)."""
    kwargs = dataset_kwargs(cfg)
    if mask_dir is not None:
        kwargs["mask_dir"] = str(mask_dir)
    return build_dataset(cfg.data.name, cfg.data.root, split, **kwargs)


def pending_from_cams(cfg: RunConfig, cams: Path, out: Path, suffix: str) -> tuple[SegDataset, list[str]]:
    """The CAM split and the ids whose ``out/<id><suffix>`` is still to be made from the CAM folder
    ``cams`` (checked complete first); ``out`` is created and a killed run's temporary files removed,
    so a stage writing one file per image resumes where it stopped."""
    dataset = dataset_for(cfg, cfg.data.cam_split)
    check_cam_folder(cams, dataset)
    out.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(out)
    return dataset, [i for i in dataset.ids if not (out / f"{i}{suffix}").is_file()]


def datamodule_for(cfg: RunConfig, section: NetworkTrainingConfig, task: str, mean, std,
                   mask_dir: str | Path | None = None) -> WSSSDataModule:
    """Loaders of the configured dataset with the crop, batch and rescale settings of ``section``."""
    return WSSSDataModule(
        dataset=cfg.data.name, root=cfg.data.root, train_split=cfg.data.train_split,
        val_split=cfg.data.val_split, task=task, crop_size=section.crop_size, batch_size=section.batch_size,
        num_workers=loader_workers(cfg.data.num_workers), mean=mean, std=std, scale_range=tuple(section.scale_range),
        dataset_kwargs=dataset_kwargs(cfg), seed=cfg.seed, mask_dir=str(mask_dir) if mask_dir is not None else None,
    )
