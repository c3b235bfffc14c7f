"""The ``wsss cams`` stage: multi-scale + flip CAMs of every image's positive classes, one file each.

Runs as a Lightning predict loop, so with several devices (DDP) the images are sharded across
ranks; every rank writes its own files (atomically) and never contends with another. Images whose
file exists and is valid are not recomputed, so a killed run resumes; a truncated or non-finite file
counts as not done and is remade.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from wsss.cams import multiscale_cams
from wsss.data.base import SegDataset
from wsss.data.transforms import normalise_image
from wsss.io import clean_stale_temps
from wsss.processes import loader_worker_init_fn
from wsss.pseudo.storage import cam_file_ok, save_cams

log = logging.getLogger("wsss")


class _ImagesToLabel(Dataset):
    """Full-resolution normalised images with their positive class ids."""

    def __init__(self, dataset: SegDataset, ids: list[str], mean, std):
        self.dataset, self.ids, self.mean, self.std = dataset, ids, mean, std

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image_id = self.ids[index]
        return {"image": normalise_image(self.dataset.load_image(image_id), self.mean, self.std), "id": image_id,
                "class_ids": torch.as_tensor(self.dataset.labels(image_id), dtype=torch.long)}


def _single(items: list[dict[str, Any]]) -> dict[str, Any]:
    (item,) = items
    return {"image": item["image"][None], "id": item["id"], "class_ids": item["class_ids"]}


class CamWriter(pl.LightningModule):
    """Predict-only module: computes and writes one CAM file per image. The refiners a trained
    classifier carries (``model.attached_refiners``) post-process the CAMs in order (``refine_cam``)."""

    def __init__(self, model: torch.nn.Module, out_dir: Path, method: str, target_layer: str, preset: str,
                 scales, flip: bool, options: dict[str, Any]):
        super().__init__()
        self.model = model
        self.out_dir, self.method, self.target_layer = out_dir, method, target_layer
        self.preset, self.scales, self.flip, self.options = preset, scales, flip, options

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> str:
        """Writes the image's CAM file and returns its id (a ``None`` would make Lightning warn)."""
        class_ids = batch["class_ids"]
        image = batch["image"]
        if class_ids.numel() == 0:
            cams = torch.zeros((0, *image.shape[-2:]))
        else:
            targets = (class_ids - 1)[None].to(image.device)
            with torch.inference_mode(False), torch.enable_grad():
                cams = multiscale_cams(self.model, image, targets, self.target_layer, method=self.method,
                                       scales=self.scales, flip=self.flip, preset=self.preset, **self.options)
                for refiner in getattr(self.model, "attached_refiners", []):
                    cams = refiner.refine_cam(cams, {"image": image, "targets": targets}, {"model": self.model})
                cams = cams[0]
        save_cams(self.out_dir / f"{batch['id']}.npz", cams.float().cpu().numpy(), class_ids.cpu().numpy())
        return batch["id"]


def export_cams(model: torch.nn.Module, dataset: SegDataset, out_dir: str | Path, method: str = "cam",
                scales=None, flip: bool = True, preset: str = "irn", target_layer: str = "feature_map",
                mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), accelerator: str = "auto",
                devices: int | str = "auto", strategy: str = "auto", num_nodes: int = 1,
                progress: bool = True, num_workers: int = 0, **cam_options) -> dict[str, int]:
    """Write ``out_dir/<id>.npz`` for every image of ``dataset``; returns ``{"written", "skipped"}``.

    ``num_workers`` loader processes decode and normalise the images while the model runs.

    ``cam_options`` go to :func:`wsss.cams.compute_cams` (e.g. ``denoise="tam"``).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(out_dir)
    pending = [i for i in dataset.ids if not cam_file_ok(out_dir / f"{i}.npz")]
    skipped = len(dataset.ids) - len(pending)
    if skipped:
        log.info("%s: %d CAM files already done, %d to make", out_dir, skipped, len(pending))
    if pending:
        loader = DataLoader(_ImagesToLabel(dataset, pending, mean, std), batch_size=1, shuffle=False,
                            collate_fn=_single, num_workers=num_workers, worker_init_fn=loader_worker_init_fn())
        writer = CamWriter(model.eval(), out_dir, method, target_layer, preset,
                           tuple(scales) if scales else None, flip, cam_options)
        trainer = pl.Trainer(accelerator=accelerator, devices=devices, strategy=strategy, num_nodes=num_nodes,
                             logger=False, enable_progress_bar=progress, enable_model_summary=False,
                             inference_mode=False)
        trainer.predict(writer, dataloaders=loader, return_predictions=False)
    return {"written": len(pending), "skipped": skipped}
