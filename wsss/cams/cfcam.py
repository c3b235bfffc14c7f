"""CF-CAM (He, Pan, Yao, arXiv 2504.00060), following the authors' code (jerryp-hfut/CF-CAM, cfcam.py).

Per image and class: channels whose activation L2 norm reaches the 75th percentile are "important"
and keep their mean gradient as weight; the others are clustered with DBSCAN on their flattened
activations (eps = 25th percentile of pairwise distances, at least 1e-5; min_samples =
max(2, int(0.05 n))), noise channels are dropped, and each cluster's mean gradient map is filtered
with a bilateral kernel (spatial sigma 5 about the map centre x range sigma 0.1) whose mean becomes
the weight of its channels. Weights of kept channels go through a softmax. These steps are checked
against the authors' code, not against the paper's equations (unverified there). DBSCAN runs on the
CPU, one image at a time.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F

from wsss.cams.base import CamMethod, spatial
from wsss.cams.core import forward_with_activations, slot_gradients


def bilateral_filter_mean(grad_map: torch.Tensor, sigma_s: float = 5.0, sigma_r: float = 0.1) -> torch.Tensor:
    """Mean of ``grad_map`` [h, w] filtered ('same' conv) by the centre-anchored bilateral kernel."""
    h, w = grad_map.shape
    yy, xx = torch.meshgrid(torch.arange(h, dtype=grad_map.dtype), torch.arange(w, dtype=grad_map.dtype),
                            indexing="ij")
    spatial_k = torch.exp(-((yy - (h - 1) / 2) ** 2 + (xx - (w - 1) / 2) ** 2) / (2 * sigma_s ** 2))
    range_k = torch.exp(-((grad_map - grad_map.mean()) ** 2) / (2 * sigma_r ** 2))
    kernel = spatial_k * range_k
    kernel = kernel / kernel.sum().clamp(min=1e-12)
    with warnings.catch_warnings():  # an even-sized kernel makes torch copy the input; harmless here
        warnings.simplefilter("ignore", UserWarning)
        filtered = F.conv2d(grad_map[None, None], kernel[None, None].to(grad_map), padding="same")
    return filtered.mean()


def cluster_filter_weights(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Channel weights [C] for one image: A, G [C, h, w] (dropped channels weigh 0)."""
    from sklearn.cluster import DBSCAN

    c = a.shape[0]
    norms = a.flatten(1).norm(dim=1)
    important = norms >= torch.quantile(norms, 0.75)
    weights = torch.full((c,), float("-inf"), dtype=a.dtype)
    weights[important] = g[important].mean(dim=(1, 2))
    rest = (~important).nonzero()[:, 0]
    if len(rest) >= 2:
        feats = a[rest].flatten(1).double()
        dists = torch.cdist(feats, feats)
        iu = torch.triu_indices(len(rest), len(rest), 1)
        eps = max(float(torch.quantile(dists[iu[0], iu[1]], 0.25)), 1e-5)
        labels = DBSCAN(eps=eps, min_samples=max(2, int(0.05 * len(rest)))).fit_predict(feats.numpy())
        for label in np.unique(labels[labels >= 0]):
            members = rest[torch.from_numpy(labels == label)]
            weights[members] = bilateral_filter_mean(g[members].mean(0))
    kept = torch.isfinite(weights)
    out = torch.zeros(c, dtype=a.dtype)
    if kept.any():
        out[kept] = torch.softmax(weights[kept], dim=0)
    return out


def raw_cfcam(model, images, targets, layer, grid=None, **_):
    logits, (activation,) = forward_with_activations(model, images, [layer], need_grad=True)
    a = spatial(activation.detach(), model, grid)
    maps = []
    for k in range(targets.shape[1]):
        (g,) = slot_gradients(logits, [activation], targets[:, k])
        g = spatial(g, model, grid)
        w = torch.stack([cluster_filter_weights(a[i].cpu(), g[i].cpu()) for i in range(a.shape[0])]).to(a)
        maps.append((w[:, :, None, None] * a).sum(1))
    return torch.stack(maps, dim=1)


CFCAM = CamMethod("cfcam", raw_cfcam, uses_gradients=True)
