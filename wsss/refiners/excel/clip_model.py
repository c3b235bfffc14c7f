"""CLIP image and text towers through ``open_clip``, and the dense image forward both CAM methods read.

The image forward replicates open_clip's ``VisionTransformer`` block by block (spec D.6 items 3-4) so
that every block's attention map is available and the last blocks can get ExCEL's calibrated path
(Static Visual Calibration, spec C.3). Weights come from a local file only; no download is tried.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from wsss.errors import ConfigError
from wsss.refiners.excel.surgery import calibrated_attention

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def weight_path(model: str, weights: str | None) -> Path:
    """The local weight file ``weights``; a clear error naming it when it is unset or missing."""
    if not weights:
        raise ConfigError(f"clip.weights is not set: ExCEL/CLIP-ES need a local {model} weight file "
                          "(e.g. open_clip_pytorch_model.bin of timm/vit_base_patch16_clip_224.openai), "
                          "or clip.model_cfg for a randomly initialised model")
    path = Path(weights)
    if not path.is_file():
        raise ConfigError(f"clip.weights: CLIP weight file {path} not found (the {model} image and text "
                          "towers are loaded from it; nothing is downloaded)")
    return path


def build_open_clip(model: str, weights: str | None, model_cfg: dict[str, Any] | None = None,
                    seed: int = 0) -> nn.Module:
    """The frozen open_clip model ``model`` with ``weights`` (a local file), or, with ``model_cfg``
    (an open_clip model config dict: ``embed_dim``, ``vision_cfg``, ``text_cfg``), a randomly
    initialised model of that shape seeded with ``seed`` (tests and the demo). Never downloads."""
    import open_clip

    if model_cfg:
        cfg = dict(model_cfg)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            net = open_clip.CLIP(embed_dim=cfg.pop("embed_dim"), vision_cfg=cfg.pop("vision_cfg"),
                                 text_cfg=cfg.pop("text_cfg"), **cfg)
    else:
        net = open_clip.create_model(model, pretrained=str(weight_path(model, weights)), load_weights=True)
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def model_id(model: str, weights: str | None, model_cfg: dict[str, Any] | None, seed: int) -> str:
    """What identifies the towers' weights: the model name and the weight file's size and mtime, or
    the random model's config and seed (part of the text cache header)."""
    if model_cfg:
        blob = json.dumps(model_cfg, sort_keys=True, default=str)
        return f"{model}:random:{hashlib.sha256(blob.encode()).hexdigest()[:12]}:seed{seed}"
    path = weight_path(model, weights)
    st = path.stat()
    return f"{model}:{path.name}:{st.st_size}:{st.st_mtime_ns}"


@dataclass
class DenseOutput:
    """Per-image tokens of one dense forward.

    ``tokens``: [B, 1+hw, E] projected tokens (CLS of the original path; patches of the calibrated path
    when SVC is on, else of the original path). ``attentions``: per block [B, 1+hw, 1+hw] original-path
    attention. ``last_input``: [B, 1+hw, W] input of the last block (CLIP-ES runs it with gradients).
    ``grid``: (h, w). ``layers``: per block its original-path output [B, 1+hw, W] (LVC's adapter input)."""

    tokens: torch.Tensor
    attentions: list[torch.Tensor]
    last_input: torch.Tensor
    grid: tuple[int, int]
    layers: list[torch.Tensor]


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """[B, N, W] -> [B, heads, N, W / heads]."""
    b, n, w = x.shape
    return x.reshape(b, n, heads, w // heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """[B, heads, N, d] -> [B, N, heads * d]."""
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


def block_qkv(block: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k, v [B, heads, N, d] of ``block`` (an open_clip ``ResidualAttentionBlock``) on its normed input."""
    heads = block.attn.num_heads
    q, k, v = F.linear(x, block.attn.in_proj_weight, block.attn.in_proj_bias).chunk(3, dim=-1)
    return split_heads(q, heads), split_heads(k, heads), split_heads(v, heads)


def attention_block(block: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One original block on tokens [B, N, W]: (output [B, N, W], attention [B, heads, N, N])."""
    q, k, v = block_qkv(block, block.ln_1(x))
    attn = (q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5).softmax(dim=-1)
    x = x + block.ls_1(block.attn.out_proj(merge_heads(attn @ v)))
    x = x + block.ls_2(block.mlp(block.ln_2(x)))
    return x, attn


def add_patch_shift(attn: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """``attn`` [B, 1+hw, 1+hw] with ``shift`` [B, hw, hw] added to its patch-patch block."""
    patches = attn[:, 1:, 1:] + shift
    return torch.cat([attn[:, :1], torch.cat([attn[:, 1:, :1], patches], dim=2)], dim=1)


def calibrated_block(block: nn.Module, x: torch.Tensor, shift: torch.Tensor | None = None) -> torch.Tensor:
    """The calibrated attention output [B, N, W] of ``block`` on the original stream ``x`` [B, N, W]
    (spec C.3: q-q, k-k and v-v attention averaged, summed over heads, applied to every head's v;
    LVC's dynamic ``shift`` [B, hw, hw] is added to the patch-patch block first, spec C.6)."""
    q, k, v = block_qkv(block, block.ln_1(x))
    attn = calibrated_attention(q, k, v).sum(dim=1)
    if shift is not None:
        attn = add_patch_shift(attn, shift)
    return block.ls_1(block.attn.out_proj(merge_heads(attn[:, None] @ v)))


def resized_positions(visual: nn.Module, grid: tuple[int, int]) -> torch.Tensor:
    """The positional embedding [1+hw, W] for a ``grid`` of patches (bilinear on the trained grid)."""
    pos = visual.positional_embedding
    n = pos.shape[0] - 1
    side = int(round(n ** 0.5))
    if (side, side) == tuple(grid):
        return pos
    patches = pos[1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
    patches = F.interpolate(patches, size=grid, mode="bilinear", align_corners=False)
    return torch.cat([pos[:1], patches[0].permute(1, 2, 0).reshape(grid[0] * grid[1], -1)])


def embed_patches(visual: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    """Tokens [B, 1+hw, W] after ``ln_pre`` of images [B, 3, H, W] (H, W multiples of the patch size)."""
    x = visual.conv1(images)
    grid = tuple(x.shape[-2:])
    x = x.flatten(2).transpose(1, 2)
    cls = visual.class_embedding.to(x.dtype)[None, None].expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], dim=1) + resized_positions(visual, grid).to(x.dtype)
    return visual.ln_pre(x), grid


def project(visual: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """``ln_post`` then ``proj``: [B, N, W] -> [B, N, E]."""
    return visual.ln_post(tokens) @ visual.proj


def dense_forward(visual: nn.Module, images: torch.Tensor, svc_layers: int = 0, run_last: bool = True,
                  head_sum_in_calibrated: bool = True, shift: torch.Tensor | None = None) -> DenseOutput:
    """The image tower on ``images`` [B, 3, H, W] with the last ``svc_layers`` blocks calibrated.

    ``run_last=False`` stops before the last block (``tokens`` then holds the unprojected input of
    that block, as CLIP-ES needs). ``shift`` [B, hw, hw] is LVC's dynamic shift of every calibrated
    block's attention. ``head_sum_in_calibrated`` keeps ExCEL's quirk: attention maps of
    calibrated blocks are head-summed, of the others head-averaged (False: averaged everywhere).
    """
    blocks = list(visual.transformer.resblocks)
    x, grid = embed_patches(visual, images)
    first_cal = len(blocks) - svc_layers
    x_cal = None
    attentions, layers = [], []
    last_input = x
    for i, block in enumerate(blocks):
        if i == len(blocks) - 1:
            last_input = x
            if not run_last:
                break
        if i >= first_cal:
            x_cal = (x if x_cal is None else x_cal) + calibrated_block(block, x, shift)
        x, attn = attention_block(block, x)
        layers.append(x)
        calibrated = i >= first_cal and head_sum_in_calibrated
        attentions.append(attn.sum(dim=1) if calibrated else attn.mean(dim=1))
    if not run_last:
        return DenseOutput(last_input, attentions, last_input, grid, layers)
    final = x if x_cal is None else torch.cat([x[:, :1], x_cal[:, 1:]], dim=1)
    return DenseOutput(project(visual, final), attentions, last_input, grid, layers)
