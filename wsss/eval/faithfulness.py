"""CAM faithfulness metrics (spec ``cam_methods.md`` section 4).

* Average Drop / Increase in Confidence (Grad-CAM++ paper): the model's score on the explanation
  ``E = x * M`` (map in [0, 1] times the normalised input) against its score on ``x``.
* Deletion / Insertion (Petsiuk et al., RISE): pixels ranked by saliency (descending, ties in flat-index
  order); deletion zeroes the top ``t*s`` pixels, insertion copies them from ``x`` into a blurred copy
  (Gaussian kernel 11, sigma 5); the area under the score curve on a uniform grid over [0, 1].
Scores are sigmoid probabilities for multi-label models (a project choice) or softmax probabilities.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F


def average_drop(y: torch.Tensor, o: torch.Tensor) -> float:
    """``100/N * sum(max(0, Y - O) / Y)`` over scores ``y`` (input) and ``o`` (explanation), [N]."""
    return float(100.0 * ((y - o).clamp(min=0) / y).mean())


def increase_in_confidence(y: torch.Tensor, o: torch.Tensor) -> float:
    """``100/N * sum(1[Y < O])``."""
    return float(100.0 * (y < o).float().mean())


def auc(probs: torch.Tensor) -> float:
    """Trapezoid area of a curve sampled at ``n + 1`` uniform steps over [0, 1]: ``(sum p - p0/2 - pn/2) / n``."""
    n = probs.shape[-1] - 1
    return float((probs.sum(-1) - probs[..., 0] / 2 - probs[..., -1] / 2) / n)


def gaussian_blur(image: torch.Tensor, kernel_size: int = 11, sigma: float = 5.0) -> torch.Tensor:
    """Per-channel Gaussian blur of [C, H, W] (reflect padding)."""
    r = torch.arange(kernel_size, dtype=image.dtype, device=image.device) - kernel_size // 2
    k1 = torch.exp(-(r ** 2) / (2 * sigma ** 2))
    k1 = k1 / k1.sum()
    kernel = (k1[:, None] * k1[None, :]).expand(image.shape[0], 1, kernel_size, kernel_size)
    pad = kernel_size // 2
    padded = F.pad(image[None], (pad, pad, pad, pad), mode="reflect")
    return F.conv2d(padded, kernel, groups=image.shape[0])[0]


def deletion_insertion_curves(score_fn: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor,
                              saliency: torch.Tensor, pixels_per_step: int, substrate_insertion: str = "blur",
                              blur_kernel: int = 11, blur_sigma: float = 5.0,
                              batch_size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Score curves [n + 1] of deletion and insertion for ``image`` [C, H, W] and ``saliency`` [H, W].

    ``score_fn`` maps a batch [N, C, H, W] to the class score [N]. Steps are evaluated in batches.
    """
    c, h, w = image.shape
    n = math.ceil(h * w / pixels_per_step)
    order = torch.sort(saliency.flatten(), descending=True, stable=True).indices
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel(), device=order.device)
    rank = rank.view(1, h, w)
    blurred = gaussian_blur(image, blur_kernel, blur_sigma) if substrate_insertion == "blur" else torch.zeros_like(image)
    zeros = torch.zeros_like(image)
    deletion, insertion = [], []
    steps = torch.arange(n + 1, device=image.device)
    for start in range(0, n + 1, batch_size):
        chunk = steps[start:start + batch_size]
        revealed = rank[None] < (chunk * pixels_per_step).view(-1, 1, 1, 1)  # [T, 1, H, W]
        deletion.append(score_fn(torch.where(revealed, zeros, image)))
        insertion.append(score_fn(torch.where(revealed, image, blurred)))
    return torch.cat(deletion), torch.cat(insertion)


@torch.no_grad()
def faithfulness(model: torch.nn.Module, images: torch.Tensor, cams: torch.Tensor, targets: torch.Tensor,
                 multilabel: bool = True, pixels_per_step: int | None = None) -> dict[str, float]:
    """Average drop, increase in confidence and mean deletion/insertion AUC of ``cams`` [B, K, H, W]
    (in [0, 1]) for ``targets`` [B, K] (entries < 0 skipped) on ``images`` [B, 3, H, W]."""
    was_training = model.training
    model.eval()
    try:
        def probs(x: torch.Tensor) -> torch.Tensor:
            logits = model(x)
            return logits.sigmoid() if multilabel else logits.softmax(-1)

        ys, os_, deletions, insertions = [], [], [], []
        h, w = images.shape[-2:]
        step = pixels_per_step or max(1, (h * w) // 100)
        base = probs(images)
        for b, k in (targets >= 0).nonzero().tolist():
            c = int(targets[b, k])
            ys.append(base[b, c])
            os_.append(probs(images[b:b + 1] * cams[b, k])[0, c])
            d, i = deletion_insertion_curves(lambda x, c=c: probs(x)[:, c], images[b], cams[b, k], step)
            deletions.append(auc(d))
            insertions.append(auc(i))
    finally:
        model.train(was_training)
    y, o = torch.stack(ys), torch.stack(os_)
    return {"average_drop": average_drop(y, o), "increase_in_confidence": increase_in_confidence(y, o),
            "deletion_auc": sum(deletions) / len(deletions), "insertion_auc": sum(insertions) / len(insertions)}
