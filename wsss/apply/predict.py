"""``wsss predict``: the trained segmenter on new images, with the inference ``wsss eval`` uses.

Per image ``DIR/<id>.png`` (VOC-palette index mask of the image's own size), ``DIR/<id>_overlay.jpg``
(the mask's colours blended over the foreground) and, over all images, ``DIR/predictions.csv``
(classes present and the pixel share of every class). Images of equal size are batched together;
each image goes through :func:`wsss.train.seg_inference.predict_logits` and
:func:`~wsss.train.seg_inference.logits_to_mask` exactly as ``evaluate_segmenter`` runs them, so a
mask equals the segmenter's ``eval`` prediction of the same image.

Files are written atomically and an image whose two files exist is not redone, so a killed run
resumes; ``DIR/predict.json`` records the checkpoint and the inference settings, and a rerun into
the same folder with others stops instead of mixing predictions. An unreadable file is named in the
log, skipped, and listed again at the end of the run and in ``DIR/skipped.txt``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from wsss.apply.images import (
    ImageFile,
    image_size,
    list_images,
    log_conversions,
    log_skipped,
    read_rgb,
    size_batches,
    skip_reason,
)
from wsss.data.palette import colorize, read_mask, write_mask
from wsss.data.transforms import normalise_image
from wsss.errors import DataError, StageMissingError, StaleOutputsError, WSSSError
from wsss.io import atomic_path, atomic_write_json, atomic_write_text, clean_stale_temps
from wsss.models.network import set_memory_format
from wsss.models.segmenter import Segmenter
from wsss.models.weights import read_checkpoint
from wsss.train.seg_inference import logits_to_mask, predict_logits

log = logging.getLogger("wsss")

# pixels per forward batch: a batch of large photos holds fewer images (always at least one)
BATCH_PIXELS = 1 << 22
RECORD = "predict.json"


@dataclass(frozen=True)
class SegInference:
    """The segmenter's inference settings (``segmenter.eval_*`` and the CRF of ``pseudo``)."""

    scales: tuple[float, ...] = (1.0,)
    flip: bool = False
    crf: bool = False
    crf_params: dict[str, float] = field(default_factory=dict)
    scale_fusion: str = "mean"


def inference_from_config(cfg) -> SegInference:
    """The settings ``wsss eval`` / ``train-seg`` evaluate the segmenter with."""
    s = cfg.segmenter
    return SegInference(tuple(s.eval_scales), s.eval_flip, s.eval_crf, cfg.pseudo.crf_params() if s.eval_crf else {})


def load_segmenter(path: str | Path) -> tuple[Segmenter, list[str]]:
    """The trained segmenter of a checkpoint in eval mode, and its class names (index 0 = background;
    ``class<i>`` when the checkpoint has none)."""
    ckpt = read_checkpoint(path, Segmenter.checkpoint_kind)
    model = Segmenter(**ckpt["hyper_parameters"]["model_config"])
    model.load_state_dict({k[len("model."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")})
    n = model.config["num_classes"]
    names = ckpt["hyper_parameters"].get("class_names") or []
    if len(names) != n:
        names = ["background"] + [f"class{i}" for i in range(1, n)]
    return model.eval(), list(names)


def inference_device(accelerator: str = "auto") -> torch.device:
    """CUDA when present and not ruled out by ``trainer.accelerator``, else the CPU."""
    if accelerator != "cpu" and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


@torch.no_grad()
def predict_batch(model: Segmenter, images: Sequence[np.ndarray], inference: SegInference) -> list[np.ndarray]:
    """Label masks uint8 [H, W] of RGB images uint8 [H, W, 3] of one size, in one batched forward."""
    device = next(model.parameters()).device
    x = torch.stack([normalise_image(im, model.mean, model.std) for im in images]).to(device)
    logits = predict_logits(model, x, inference.scales, inference.flip, inference.scale_fusion)
    return [logits_to_mask(logits[i], images[i], inference.crf, inference.crf_params) for i in range(len(images))]


def mask_overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """``image`` uint8 [H, W, 3] with the palette colours of ``mask`` [H, W] blended over its non-background
    pixels (background left as it is)."""
    blended = (1 - alpha) * image.astype(np.float32) + alpha * colorize(mask).astype(np.float32)
    out = np.where((mask != 0)[..., None], np.clip(np.round(blended), 0, 255), image)
    return out.astype(np.uint8)


def class_shares(mask: np.ndarray, num_classes: int) -> np.ndarray:
    """Pixel share float64 [num_classes] of each class in ``mask`` (ignore pixels count for none)."""
    counts = np.bincount(mask.reshape(-1), minlength=256)[:num_classes].astype(np.float64)
    return counts / max(1, mask.size)


def predictions_table(rows: Sequence[tuple[ImageFile, np.ndarray]], class_names: list[str]) -> str:
    """``predictions.csv``: id, file, height, width, the foreground classes present as
    ``name:share`` by decreasing share, then one share column per class (background included)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["id", "file", "height", "width", "classes", *[f"share_{n}" for n in class_names]])
    for image, mask in rows:
        shares = class_shares(mask, len(class_names))
        present = sorted((c for c in range(1, len(class_names)) if shares[c] > 0), key=lambda c: (-shares[c], c))
        writer.writerow([image.id, str(image.path), mask.shape[0], mask.shape[1],
                         ";".join(f"{class_names[c]}:{shares[c]:.4f}" for c in present),
                         *[f"{s:.6f}" for s in shares]])
    return buf.getvalue()


def mask_path(out: Path, image_id: str) -> Path:
    return out / f"{image_id}.png"


def overlay_path(out: Path, image_id: str) -> Path:
    return out / f"{image_id}_overlay.jpg"


def write_outputs(out: Path, image_id: str, image: np.ndarray, mask: np.ndarray) -> None:
    """The overlay first, the mask last: an image counts as done once its mask exists."""
    with atomic_path(overlay_path(out, image_id)) as tmp:
        Image.fromarray(mask_overlay(image, mask)).save(tmp, format="JPEG", quality=90)
    write_mask(mask_path(out, image_id), mask)


def check_record(out: Path, record: dict[str, Any]) -> None:
    """Refuse a folder holding predictions of another checkpoint or other settings; record ours."""
    path = out / RECORD
    record = json.loads(json.dumps(record))
    if path.is_file():
        old = json.loads(path.read_text())
        if old != record:
            changed = [f"{k}: {old.get(k)!r} -> {v!r}" for k, v in record.items() if old.get(k) != v]
            raise StaleOutputsError(f"{out} holds predictions made with another checkpoint or other settings "
                                    f"({path}):\n  " + "\n  ".join(changed)
                                    + "\nChoose another --pred_out, or delete that folder to redo it.")
        return
    if out.is_dir() and any(out.rglob("*.png")):
        raise StaleOutputsError(f"{out} already holds PNG files with no {RECORD} saying how they were made; "
                                "choose another --pred_out (an empty or new folder)")
    atomic_write_json(path, record)


def predict_folder(model: Segmenter, class_names: list[str], images: Sequence[ImageFile], out: str | Path,
                   inference: SegInference, batch_size: int = 8, progress: bool = True,
                   record: dict[str, Any] | None = None) -> dict[str, Any]:
    """Predict every image into ``out`` (resuming), then write ``predictions.csv``; returns
    ``{"out", "written", "done_before", "skipped": [(file, reason), ...]}``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    check_record(out, record if record is not None else {"inference": asdict(inference)})
    for folder in {mask_path(out, i.id).parent for i in images}:
        clean_stale_temps(folder)
    pending = [i for i in images if not (mask_path(out, i.id).is_file() and overlay_path(out, i.id).is_file())]
    skipped: list[tuple[Path, str]] = []
    sizes = []
    for image in pending:
        try:
            sizes.append((image, image_size(image.path)))
        except DataError as exc:
            log.warning("skipping %s", exc)
            skipped.append((image.path, skip_reason(image.path, exc)))
    if len(pending) < len(images):
        log.info("%s: %d images already predicted, %d to do", out, len(images) - len(pending), len(sizes))
    conversions = []
    written = 0
    bar = tqdm(total=len(sizes), desc="predict", unit="img", disable=not progress)
    for batch in size_batches(sizes, batch_size, BATCH_PIXELS):
        loaded = []
        for image in batch:
            try:
                rgb, note = read_rgb(image.path)
            except DataError as exc:
                log.warning("skipping %s", exc)
                skipped.append((image.path, skip_reason(image.path, exc)))
                bar.update(1)
                continue
            if note:
                conversions.append((image.path, note))
            loaded.append((image, rgb))
        if loaded:
            masks = predict_batch(model, [rgb for _, rgb in loaded], inference)
            for (image, rgb), mask in zip(loaded, masks):
                write_outputs(out, image.id, rgb, mask)
                written += 1
                bar.update(1)
    bar.close()
    log_conversions(conversions)
    bad = {p for p, _ in skipped}
    done = [i for i in images if i.path not in bad]
    atomic_write_text(out / "predictions.csv",
                      predictions_table([(i, read_mask(mask_path(out, i.id))) for i in done], class_names))
    skipped_file = out / "skipped.txt"
    if skipped:
        atomic_write_text(skipped_file, "".join(f"{p}\t{reason}\n" for p, reason in skipped))
    else:
        skipped_file.unlink(missing_ok=True)
    log_skipped(skipped, "predict")
    done_before = len(images) - len(pending)
    log.info("predict: %d images in %s (%d new, %d done before, %d skipped); %s", len(done), out, written,
             done_before, len(skipped), out / "predictions.csv")
    return {"out": out, "written": written, "done_before": done_before, "skipped": skipped}


def default_checkpoint(cfg) -> Path:
    """``OUT/segmenter_<segmenter.masks>/segmenter.ckpt``, the segmenter ``wsss train-seg`` made."""
    from wsss.stages.train_seg import masks_name

    return cfg.out_dir / f"segmenter_{masks_name(cfg.segmenter.masks)}" / "segmenter.ckpt"


def run_predict(cfg, images: str, ckpt: str | None = None, out: str | None = None,
                batch_size: int = 8) -> dict[str, Any]:
    """``wsss predict``: the images ``images`` names through the checkpoint (default: the segmenter of
    the config's OUT) with the config's inference settings, into ``out`` (default ``OUT/predict``)."""
    from wsss.stages.fingerprint import file_digest

    path = Path(ckpt) if ckpt else default_checkpoint(cfg)
    if not path.is_file():
        raise StageMissingError(f"segmenter checkpoint {path} not found; run `wsss train-seg` with the same --out "
                                "first, or pass --ckpt FILE")
    if batch_size < 1:
        raise WSSSError(f"--batch_size must be at least 1, got {batch_size}")
    files = list_images(images)
    model, class_names = load_segmenter(path)
    set_memory_format(model, cfg.trainer.channels_last).to(inference_device(cfg.trainer.accelerator))
    inference = inference_from_config(cfg)
    record = {"checkpoint": file_digest(path), "inference": asdict(inference)}
    return predict_folder(model, class_names, files, Path(out) if out else cfg.out_dir / "predict", inference,
                          batch_size=batch_size, progress=cfg.progress, record=record)


def predict_images(images: Any, ckpt: str | Path, scales: Sequence[float] = (1.0,), flip: bool = False,
                   crf: bool = False, crf_params: dict[str, float] | None = None,
                   device: str | None = None) -> dict[str, np.ndarray]:
    """Masks of new images as arrays (``wsss.predict``): ``{id: uint8 [H, W]}`` in input order.

    ``images``: a folder, glob or file path (ids as in ``wsss predict``), an RGB uint8 array [H, W, 3],
    or a list of paths and arrays (arrays get ids ``"0"``, ``"1"``, ... by position). Nothing is
    written; an unreadable file raises :class:`DataError`.
    """
    model, _ = load_segmenter(ckpt)
    model.to(torch.device(device) if device else inference_device())
    inference = SegInference(tuple(scales), flip, crf, dict(crf_params or {}))
    items = []
    for position, item in enumerate(images if isinstance(images, (list, tuple)) else [images]):
        if isinstance(item, np.ndarray):
            items.append((str(position), check_rgb(item, str(position))))
        else:
            items += [(f.id, read_rgb(f.path)[0]) for f in list_images(item)]
    masks: dict[str, np.ndarray] = {}
    for batch in size_batches([(i, rgb.shape[:2]) for i, (_, rgb) in enumerate(items)], 8, BATCH_PIXELS):
        for i, mask in zip(batch, predict_batch(model, [items[i][1] for i in batch], inference)):
            masks[items[i][0]] = mask
    return {image_id: masks[image_id] for image_id, _ in items}


def check_rgb(array: np.ndarray, name: str) -> np.ndarray:
    """An array given as an image: uint8 [H, W, 3] (greyscale [H, W] is replicated)."""
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise DataError(f"image {name}: expected an RGB uint8 array [H, W, 3], got {array.dtype} {array.shape}")
    return np.ascontiguousarray(array)
