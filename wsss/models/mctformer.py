"""MCTformer-V2-style backbone: a ViT with one class token per class (Xu et al., CVPR 2022,
arXiv 2203.02891; facts from xulianuwa/MCTformer at 993012e ``models.py`` ``MCTformerV2``).

Layout as the official model: ``C`` class tokens first, each with its own learned positional
embedding, then the patch tokens; no final norm (V2's ``forward_features`` returns the raw last
block). The classifier built on it reads:

* ``final``: the raw patch tokens as a map, for a 3x3 conv head with bias (``classifier_head``) whose
  average-pooled output gives the patch logits;
* ``extras["class_token_logits"]``: each class token's mean over channels [B, C], the class-token
  logits; both get a multilabel soft-margin loss (official ``engine.train_one_epoch``).

Deviations: the timm block (same maths as the official ``Block``, fused attention kernel);
positional embeddings resampled with timm's bicubic ``resample_abs_pos_embed`` (the official code
uses ``scale_factor = (n + 0.1) / n``; identical at the native grid); pretrained weights: every
tensor but ``cls_token`` and ``pos_embed`` (re-initialised, as the official fine-tuning does).
"""

from __future__ import annotations

import torch
from timm.layers import trunc_normal_
from torch import nn

from wsss.models.backbone_base import BackboneOutput
from wsss.models.vit import TimmViT
from wsss.models.weights import load_into, read_state_dict, resolve_weight_file


class MCTformerViT(TimmViT):
    """A timm ViT whose prefix is ``num_class_tokens`` class tokens (one per foreground class).

    ``features``, ``tokens`` and ``attentions`` are as for :class:`TimmViT` with
    ``num_prefix_tokens = num_class_tokens``; ``prefix_tokens`` are the raw class tokens."""

    # the classifier head the official V2 puts on the patch tokens
    classifier_head = {"kernel_size": 3, "bias": True}

    def __init__(self, name: str, timm_name: str | None = None, pretrained: bool | str = False,
                 num_class_tokens: int = 20, **timm_kwargs):
        super().__init__(name, timm_name, pretrained=False, class_token=False, reg_tokens=num_class_tokens,
                         global_pool="avg", **timm_kwargs)
        self.num_class_tokens = num_class_tokens
        # V2 never applies the final norm; Identity keeps every parameter in use (DDP)
        self.net.norm = nn.Identity()
        trunc_normal_(self.net.reg_token, std=0.02)
        trunc_normal_(self.net.pos_embed, std=0.02)
        path = resolve_weight_file(self.name, self.timm_name, pretrained)
        if path is not None:
            state = {k: v for k, v in read_state_dict(path).items()
                     if k.split(".")[-1] not in ("cls_token", "pos_embed")}
            load_into(self.net, state, str(path))

    def forward(self, x: torch.Tensor, return_attn: bool = False) -> BackboneOutput:
        out = super().forward(x, return_attn=return_attn)
        out.extras["class_token_logits"] = out.prefix_tokens.mean(-1)
        return out
