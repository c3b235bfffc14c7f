"""MCTformer-V2 class-specific localisation maps (Xu et al., CVPR 2022; facts from
xulianuwa/MCTformer 993012e ``models.py`` ``MCTformerV2.forward`` and ``engine.generate_attention_maps_ms``).

For a backbone with one class token per class (:class:`wsss.models.mctformer.MCTformerViT`):

1. attention of every block averaged over heads;
2. class-to-patch attention ``mtatt``: the class-token rows of the last ``last_n`` blocks (official
   ``--layer-index 3`` for map generation), summed, patch columns, as maps [B, C, h, w];
3. ``fused = mtatt * ReLU(patch CAM)``, the patch CAM being the 3x3 conv head on the patch tokens
   (``attention_type="fused"``; ``"attention"`` keeps ``mtatt``, ``"patchcam"`` the ReLU'd CAM);
4. patch-to-patch refinement (``--patch-attn-refine``): ``M <- A_pp @ vec(M)`` with ``A_pp`` the
   patch-to-patch attention summed over **all** blocks.

Multi-scale, flip and normalisation come from :func:`wsss.cams.multiscale_cams` (the official
generation sums the upsampled maps over scales and flips, as the ``irn`` preset does).
"""

from __future__ import annotations

import torch

from wsss.cams.base import CamMethod

KINDS = ("fused", "attention", "patchcam")


def mctformer_maps(attentions: list[torch.Tensor], patch_cams: torch.Tensor, targets: torch.Tensor,
                   last_n: int = 3, kind: str = "fused", refine: bool = True) -> torch.Tensor:
    """MCTformer-V2 maps [B, K, h, w] of the class slots ``targets`` [B, K] (entries < 0 padding).

    Args:
        attentions: per block [B, heads, C + N, C + N], the ``C`` class tokens first.
        patch_cams: raw conv-head maps [B, C, h, w] (no ReLU).
        last_n: blocks whose class-to-patch attention is summed.
        kind: ``fused``, ``attention`` or ``patchcam`` (official ``attention_type``).
        refine: apply the patch-to-patch attention refinement.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}; got {kind!r}")
    b, c, h, w = patch_cams.shape
    attn = torch.stack([a.mean(1) for a in attentions])  # [L, B, T, T]
    cams = patch_cams.clamp(min=0)
    if kind != "patchcam":
        mtatt = attn[-last_n:].sum(0)[:, :c, c:].reshape(b, c, h, w)
        cams = mtatt if kind == "attention" else mtatt * cams
    index = targets.clamp(min=0)[..., None, None].expand(-1, -1, h, w)
    maps = cams.gather(1, index)
    if not refine:
        return maps
    patch_attn = attn[:, :, c:, c:].sum(0)  # [B, N, N]
    return torch.einsum("bij,bkj->bki", patch_attn, maps.flatten(2)).reshape(maps.shape)


def _method(name: str, kind: str) -> CamMethod:
    def raw(model, images, targets, layer=None, last_n: int = 3, refine: bool = True, **_):
        backbone = getattr(model, "backbone", None)
        num_tokens = getattr(backbone, "num_class_tokens", None)
        if not hasattr(model, "forward_outputs") or num_tokens is None:
            raise ValueError(f"{name} needs a classifier on a backbone with one class token per class "
                             "(backbone mctformer_*)")
        with torch.no_grad():
            out = model.forward_outputs(images, return_attn=True)
            patch_cams = model.head.cam(out["features"])
        return mctformer_maps(out["backbone"].attentions, patch_cams, targets, last_n, kind, refine)

    return CamMethod(name, raw, uses_gradients=False)


MCTFORMER = _method("mctformer", "fused")
MCTFORMER_ATTN = _method("mctformer_attn", "attention")
MCTFORMER_PATCHCAM = _method("mctformer_patchcam", "patchcam")
