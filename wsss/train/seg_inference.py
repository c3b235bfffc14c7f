"""Segmenter inference: multi-scale + flip fusion, optional dense CRF, evaluation over a split."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from wsss.data.base import SegDataset
from wsss.data.palette import write_mask
from wsss.data.transforms import normalise_image
from wsss.eval.miou import ConfusionMatrix


def predict_logits(model, image: torch.Tensor, scales=(1.0,), flip: bool = False,
                   scale_fusion: str = "mean") -> torch.Tensor:
    """Fused logits [B, C, H, W] of ``image`` [B, 3, H, W] (images of one size, each independent in eval mode).

    Per scale, logits of the image plus the un-flipped logits of its mirror are summed (ToCo's
    ``infer_seg_voc.py``), resized to the input; scales are fused by ``mean`` (DeepLab-style, default)
    or element-wise ``max`` (ToCo).
    """
    size = image.shape[-2:]
    n = image.shape[0]
    fused = []
    for scale in scales:
        x = image if scale == 1.0 else F.interpolate(image, scale_factor=scale, mode="bilinear", align_corners=False)
        batch = torch.cat([x, x.flip(-1)]) if flip else x
        logits = model(batch)
        logits = logits[:n] + logits[n:].flip(-1) if flip else logits
        fused.append(F.interpolate(logits, size=size, mode="bilinear", align_corners=False))
    stacked = torch.stack(fused)
    return stacked.amax(0) if scale_fusion == "max" else stacked.mean(0)


def predict_mask(model, image: torch.Tensor, raw_image: np.ndarray | None = None, scales=(1.0,), flip: bool = False,
                 scale_fusion: str = "mean", crf: bool = False, crf_params: dict[str, Any] | None = None) -> np.ndarray:
    """Label mask uint8 [H, W] of ``image`` [1, 3, H, W]; with ``crf`` the softmax is refined on
    ``raw_image`` uint8 [H, W, 3]."""
    return logits_to_mask(predict_logits(model, image, scales, flip, scale_fusion)[0], raw_image, crf, crf_params)


def logits_to_mask(logits: torch.Tensor, raw_image: np.ndarray | None = None, crf: bool = False,
                   crf_params: dict[str, Any] | None = None) -> np.ndarray:
    """Fused logits [C, H, W] -> label mask uint8 [H, W] (argmax, or dense CRF on ``raw_image``)."""
    if not crf:
        return logits.argmax(0).cpu().numpy().astype(np.uint8)
    from wsss.pseudo.crf import dense_crf

    probs = torch.softmax(logits.float(), 0).cpu().numpy()
    return dense_crf(raw_image, probs, **(crf_params or {})).argmax(0).astype(np.uint8)


@torch.no_grad()
def evaluate_segmenter(model, dataset: SegDataset, scales=(1.0,), flip: bool = False, scale_fusion: str = "mean",
                       crf: bool = False, crf_params: dict[str, Any] | None = None, out_dir: str | Path | None = None,
                       progress: bool = True) -> dict[str, Any]:
    """mIoU of ``model`` on every image of ``dataset``; predictions written to ``out_dir`` when given."""
    model.eval()
    device = next(model.parameters()).device
    cm = ConfusionMatrix(dataset.num_classes)
    for image_id in tqdm(dataset.ids, desc="segmenter eval", unit="img", disable=not progress):
        raw = dataset.load_image(image_id)
        x = normalise_image(raw, model.mean, model.std)[None].to(device)
        mask = predict_mask(model, x, raw, scales, flip, scale_fusion, crf, crf_params)
        if out_dir is not None:
            write_mask(Path(out_dir) / f"{image_id}.png", mask)
        cm.update(mask, dataset.load_mask(image_id))
    return cm.compute(dataset.class_names)
