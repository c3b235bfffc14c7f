"""MCTformer-style attention CAM (Xu et al., arXiv 2203.02891), adapted to one class token.

MCTformer has one class token per class; a standard ViT has one. Here the class-to-patch attention
of the last ``last_n`` blocks (heads averaged, summed) is shared by all classes and fused with each
class's token CAM as ``sqrt(attn * ReLU(token CAM))`` (the MCTformer+ fusion); the fused map is then
refined by the patch affinity ``sum over all blocks of patch-to-patch attention``
(``M <- Aff @ vec(M)``, affinity power 1). Needs ``model.forward_outputs(x, return_attn=True)``
returning ``{"backbone": BackboneOutput, "features": final token map}`` and ``get_classifier()``.
"""

from __future__ import annotations

import torch

from wsss.cams.base import CamMethod
from wsss.cams.cam import class_maps, classifier_weight


def attention_cam(attentions: list[torch.Tensor], token_cams: torch.Tensor, num_prefix: int,
                  last_n: int = 12, refine: bool = True) -> torch.Tensor:
    """Fuse and refine: attentions L x [B, heads, P+N, P+N], token CAMs [B, K, h, w] -> [B, K, h, w]."""
    b, k, h, w = token_cams.shape
    attn = torch.stack([a.mean(1) for a in attentions])  # [L, B, P+N, P+N]
    cls_to_patch = attn[-last_n:, :, 0, num_prefix:].sum(0).reshape(b, 1, h, w)
    fused = torch.sqrt(cls_to_patch.clamp(min=0) * token_cams.clamp(min=0))
    if not refine:
        return fused
    affinity = attn[:, :, num_prefix:, num_prefix:].sum(0)  # [B, N, N]
    return torch.einsum("bij,bkj->bki", affinity, fused.flatten(2)).reshape(b, k, h, w)


def raw_attn_cam(model, images, targets, layer=None, last_n: int = 12, refine: bool = True, **_):
    if not hasattr(model, "forward_outputs"):
        raise ValueError("attn_cam needs a wsss ViT Classifier (forward_outputs with attention)")
    with torch.no_grad():
        out = model.forward_outputs(images, return_attn=True)
    backbone = out["backbone"]
    if not backbone.attentions:
        raise ValueError("attn_cam needs a ViT backbone (attention matrices)")
    token = class_maps(classifier_weight(model), out["features"], targets)
    return attention_cam(backbone.attentions, token, backbone.num_prefix_tokens, last_n, refine)


ATTN_CAM = CamMethod("attn_cam", raw_attn_cam, uses_gradients=False)
