"""ViT/DeiT backbones through timm: per-block tokens and maps, attention on request, any input size."""

from __future__ import annotations

import timm
import torch
from torch import nn

from wsss.models.backbone_base import Backbone, BackboneOutput
from wsss.models.weights import load_into, read_state_dict, resolve_weight_file


def attention_probs(attn: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Softmax attention [B, heads, N, N] of a timm ``Attention`` module on its input ``x`` [B, N, D]
    (the same q/k computation as its fused forward, made explicit to expose the probabilities)."""
    b, n, _ = x.shape
    qkv = attn.qkv(x).reshape(b, n, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k = attn.q_norm(qkv[0]), attn.k_norm(qkv[1])
    return ((q * attn.scale) @ k.transpose(-2, -1)).softmax(dim=-1)


class TimmViT(Backbone):
    """A timm VisionTransformer exposing per-block tokens and maps.

    Positional embeddings are resampled (bicubic) for any input whose sides are multiples of the
    patch size. ``features[i]`` is block ``i``'s raw output (patch tokens as a map); ``final`` is the
    last block after the final norm.
    """

    is_vit = True

    def __init__(self, name: str, timm_name: str | None = None, pretrained: bool | str = False, **timm_kwargs):
        super().__init__()
        self.name = name
        self.timm_name = timm_name or name
        timm_kwargs.setdefault("drop_path_rate", 0.0)
        self.net = timm.create_model(self.timm_name, pretrained=False, num_classes=0, dynamic_img_size=True,
                                     **timm_kwargs)
        dim = self.net.embed_dim
        self.out_channels = [dim] * len(self.net.blocks)
        self.final_channels = dim
        self.patch_size = self.net.patch_embed.patch_size[0]
        self.stride = self.patch_size
        self.num_prefix_tokens = self.net.num_prefix_tokens
        cfg = self.net.pretrained_cfg or {}
        self.mean = tuple(cfg.get("mean", self.mean))
        self.std = tuple(cfg.get("std", self.std))
        path = resolve_weight_file(self.name, self.timm_name, pretrained)
        if path is not None:
            load_into(self.net, read_state_dict(path), str(path))

    def forward(self, x: torch.Tensor, return_attn: bool = False) -> BackboneOutput:
        h, w = x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
        net = self.net
        tokens = net.norm_pre(net.patch_drop(net._pos_embed(net.patch_embed(x))))
        per_block, attentions = [], []
        for block in net.blocks:
            if return_attn:
                attentions.append(attention_probs(block.attn, block.norm1(tokens)))
            tokens = block(tokens)
            per_block.append(tokens)
        final_tokens = net.norm(tokens)
        p = self.num_prefix_tokens
        maps = [self.to_map(t[:, p:], h, w) for t in per_block]
        return BackboneOutput(features=maps, final=self.to_map(final_tokens[:, p:], h, w),
                              prefix_tokens=final_tokens[:, :p], tokens=per_block,
                              attentions=attentions if return_attn else None, num_prefix_tokens=p)

    @staticmethod
    def to_map(patch_tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """[B, h*w, D] row-major tokens -> [B, D, h, w]."""
        return patch_tokens.transpose(1, 2).reshape(patch_tokens.shape[0], -1, h, w)
