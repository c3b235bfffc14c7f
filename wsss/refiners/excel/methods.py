"""The CLIP CAM methods ``excel`` and ``clip_es``: each brings its own model (frozen CLIP towers plus the
encoded class texts), so ``wsss cams --cams.method excel`` needs no trained classifier.

* ``excel`` (spec C.1-C.5): SVC tokens -> patch-text CAM with the redundancy subtraction and the
  class-token prior over the enriched texts (TSE) and background words -> attention-affinity
  refinement with box masks -> PAR.
* ``clip_es`` (spec D): Grad-CAM of the softmax over the image's classes and the background words,
  at the last block's ``ln_1`` output -> class-aware attention affinity (-> PAR when ``par_iter > 0``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from wsss.affinity.par import par_refine
from wsss.cams.base import CamMethod
from wsss.cams.core import WSSS_EPS, minmax
from wsss.errors import ConfigError
from wsss.refiners.excel.affinity import affinity_refine, mean_patch_attention, transition_matrix
from wsss.refiners.excel.clip_model import (
    CLIP_MEAN,
    CLIP_STD,
    block_qkv,
    build_open_clip,
    dense_forward,
    merge_heads,
    model_id,
    project,
)
from wsss.refiners.excel.surgery import surgery_cam
from wsss.refiners.excel.text import (
    ClassTexts,
    default_text_file,
    enrich_text,
    load_class_texts,
    text_embeddings,
)

CLIP_LOGIT_SCALE = 100.0


class ClipCamModel(nn.Module):
    """Frozen CLIP towers with the dataset's encoded texts; ``forward`` gives zero-shot logits [B, K].

    Args:
        clip: an open_clip ``CLIP`` model.
        embeddings: ``{"classes", "background", "bank"}`` of :func:`text_embeddings`.
        options: the ``clip`` config section (a dict of :class:`wsss.config.ClipConfig` fields).
    """

    def __init__(self, clip: nn.Module, embeddings: dict[str, torch.Tensor], options: dict[str, Any]):
        super().__init__()
        self.clip = clip
        self.options = dict(options)
        self.mean, self.std = CLIP_MEAN, CLIP_STD
        self.num_classes = embeddings["classes"].shape[0]
        self.register_buffer("class_text", embeddings["classes"].clone(), persistent=False)
        self.register_buffer("background_text", embeddings["background"].clone(), persistent=False)
        bank = embeddings["bank"]
        enriched = (enrich_text(embeddings["classes"], bank, embeddings["background"], self.options["keep"])[0]
                    if bank.shape[1] else torch.cat([embeddings["classes"], embeddings["background"]]))
        self.register_buffer("enriched_text", enriched, persistent=False)

    @property
    def visual(self) -> nn.Module:
        return self.clip.visual

    def patch_input(self, images: torch.Tensor) -> torch.Tensor:
        """Images resized (bicubic) to the next multiple of the patch size (spec D.2)."""
        p = self.visual.conv1.kernel_size[0]
        size = tuple(math.ceil(s / p) * p for s in images.shape[-2:])
        if size == tuple(images.shape[-2:]):
            return images
        return F.interpolate(images, size=size, mode="bicubic", align_corners=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = dense_forward(self.visual, self.patch_input(images))
        image = F.normalize(out.tokens[:, 0], dim=-1)
        return CLIP_LOGIT_SCALE * image @ self.class_text.t()


def gather_slots(maps: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-class maps [B, K, h, w] -> the requested slots [B, S, h, w] (padding slots < 0 read class 0;
    :func:`wsss.cams.compute_cams` zeroes them)."""
    index = targets.clamp(min=0)[..., None, None].expand(-1, -1, *maps.shape[-2:])
    return maps.gather(1, index)


def refine_maps(model: ClipCamModel, maps: torch.Tensor, attentions: list[torch.Tensor],
                images: torch.Tensor) -> torch.Tensor:
    """Attention-affinity refinement of maps [B, S, h, w] (min-max after), then PAR on ``images``
    [B, 3, H, W] (normalised images: PAR's colour weights ignore a per-channel affine map) ->
    [B, S, h, w], or [B, S, H, W] with PAR."""
    o = model.options
    if o["affinity"]:
        transitions = transition_matrix(mean_patch_attention(attentions, o["affinity_layers"]))
        maps = torch.stack([affinity_refine(m, t, o["box_threshold"]) for m, t in zip(maps, transitions)])
    maps = minmax(maps, WSSS_EPS)
    if o["par_iter"] > 0:
        maps = par_refine(images, maps, num_iter=o["par_iter"], normalise=True)
    return maps


def raw_excel(model, images, targets, layer=None, **_):
    """ExCEL's training-free CAMs [B, S, h, w] (or [B, S, H, W] with PAR) of ``targets`` [B, S]."""
    if not isinstance(model, ClipCamModel):
        raise ValueError("the excel CAM method needs its CLIP model (wsss cams builds it from the clip section)")
    o = model.options
    with torch.no_grad():
        x = model.patch_input(images)
        out = dense_forward(model.visual, x, svc_layers=o["svc_layers"],
                            head_sum_in_calibrated=o["head_sum_in_calibrated"])
        if o["feature_norm"] not in ("token", "channel"):
            raise ConfigError(f"clip.feature_norm must be 'token' or 'channel'; got {o['feature_norm']!r}")
        tokens = F.normalize(out.tokens, dim=1 if o["feature_norm"] == "token" else -1)
        cams = surgery_cam(tokens, model.enriched_text, model.num_classes, use_prior=o["class_prior"])
        h, w = out.grid
        maps = gather_slots(cams.transpose(1, 2).reshape(-1, model.num_classes, h, w), targets)
        return refine_maps(model, maps, out.attentions, images)


def last_block_with_grad(block: nn.Module, x: torch.Tensor, normed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The last block from its input ``x`` [1, N, W] and ``normed = ln_1(x)`` (the Grad-CAM activation):
    (output [1, N, W], head-averaged attention [1, N, N])."""
    q, k, v = block_qkv(block, normed)
    attn = (q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5).softmax(dim=-1)
    x = x + block.ls_1(block.attn.out_proj(merge_heads(attn @ v)))
    x = x + block.ls_2(block.mlp(block.ln_2(x)))
    return x, attn.mean(dim=1)


def clip_es_image(model: ClipCamModel, x: torch.Tensor, slots: torch.Tensor) -> tuple[torch.Tensor, list]:
    """CLIP-ES Grad-CAMs [S, h, w] of one image ``x`` [1, 3, H', W'] for class ids ``slots`` [S]
    (padding < 0 gives zeros), and its attention maps (every block, head-averaged)."""
    visual = model.visual
    with torch.no_grad():
        out = dense_forward(visual, x, run_last=False, head_sum_in_calibrated=False)
    h, w = out.grid
    valid = slots[slots >= 0]
    block = visual.transformer.resblocks[-1]
    normed = block.ln_1(out.last_input).detach().requires_grad_(True)
    with torch.enable_grad():
        final, attn = last_block_with_grad(block, out.last_input, normed)
        feature = F.normalize(project(visual, final[:, 1:].mean(dim=1, keepdim=True))[:, 0], dim=-1)
        texts = torch.cat([model.class_text[valid], model.background_text])
        probs = (CLIP_LOGIT_SCALE * feature @ texts.t()).softmax(dim=-1)[0]
        activation = normed[0, 1:]
        maps = torch.zeros(slots.shape[0], h * w, device=x.device)
        position = 0
        for s, c in enumerate(slots.tolist()):
            if c < 0:
                continue
            (grad,) = torch.autograd.grad(probs[position], normed, retain_graph=True)
            position += 1
            alpha = grad[0, 1:].mean(dim=0)
            maps[s] = (activation.detach() @ alpha).clamp(min=0)
    return maps.reshape(-1, h, w), [*out.attentions, attn.detach()]


def scale_free_minmax(maps: torch.Tensor) -> torch.Tensor:
    """Per-map min-max of [..., h, w] without an additive eps (Grad-CAM's scale is arbitrary: a small
    eps would flatten weak but valid maps); a constant map becomes 0."""
    low = maps.amin(dim=(-2, -1), keepdim=True)
    span = maps.amax(dim=(-2, -1), keepdim=True) - low
    return torch.where(span > 0, (maps - low) / span.clamp_min(torch.finfo(maps.dtype).tiny), torch.zeros_like(maps))


def raw_clip_es(model, images, targets, layer=None, **_):
    """CLIP-ES CAMs [B, S, h, w] (or [B, S, H, W] with PAR) of ``targets`` [B, S]."""
    if not isinstance(model, ClipCamModel):
        raise ValueError("the clip_es CAM method needs its CLIP model (wsss cams builds it from the clip section)")
    x = model.patch_input(images)
    results = [clip_es_image(model, x[b:b + 1], targets[b]) for b in range(images.shape[0])]
    maps = scale_free_minmax(torch.stack([r[0] for r in results]))
    attentions = [torch.cat([r[1][i] for r in results]) for i in range(len(results[0][1]))]
    with torch.no_grad():
        return refine_maps(model, maps, attentions, images)


def clip_section(cfg) -> dict[str, Any]:
    return dataclasses.asdict(cfg.clip)


def class_texts_for(cfg) -> ClassTexts:
    from wsss.stages.common import dataset_for

    names = dataset_for(cfg, cfg.data.cam_split).class_names[1:]
    return load_class_texts(cfg.clip.text_file or default_text_file(cfg.data.name), names)


def build_clip_cam_model(cfg) -> ClipCamModel:
    """The :class:`ClipCamModel` of a run config (``clip`` section, dataset class names)."""
    import open_clip

    c = cfg.clip
    clip = build_open_clip(c.model, c.weights, c.model_cfg, cfg.seed)
    tokenizer = open_clip.get_tokenizer(c.model)

    def encode(texts):
        return torch.cat([clip.encode_text(tokenizer(texts[i:i + 64], context_length=clip.context_length))
                          for i in range(0, len(texts), 64)])

    texts = class_texts_for(cfg)
    cache = c.text_cache or cfg.out_dir / "clip_text.pt"
    embeddings = text_embeddings(texts, encode, model_id(c.model, c.weights, c.model_cfg, cfg.seed),
                                 c.n_clusters, cfg.seed, cache)
    return ClipCamModel(clip, embeddings, clip_section(cfg)).eval()


def clip_model_key(cfg) -> str:
    """Changes with the ``clip`` section, the weights (name, size, mtime) and the text file's content."""
    c = cfg.clip
    blob = json.dumps({"clip": clip_section(cfg), "seed": cfg.seed, "text": class_texts_for(cfg).digest,
                       "model": model_id(c.model, c.weights, c.model_cfg, cfg.seed)}, sort_keys=True, default=str)
    return "clip:" + hashlib.sha256(blob.encode()).hexdigest()[:16]


EXCEL = CamMethod("excel", raw_excel, uses_gradients=False, build_model=build_clip_cam_model,
                  model_key=clip_model_key)
CLIP_ES = CamMethod("clip_es", raw_clip_es, uses_gradients=True, build_model=build_clip_cam_model,
                    model_key=clip_model_key)
