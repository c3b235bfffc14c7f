"""DOEI refiner: dual optimisation of embedding information in the last ViT blocks (Zhu et al.,
arXiv 2502.15885; spec ``toco_usage_doei.md`` section C). No code was released: every operator is
a reconstruction (spec C.2, marked [UNVERIFIED] there), each a named option below.

What the paper's figure fixes and this implements: a hybrid matrix of self-attention and the
cosine similarity of embeddings combined with RGB; a class-wise and a patch-wise progressive
decoupling branch that amplify high-confidence and suppress low-confidence tokens without
parameters; a residual injection in each wrapped layer.

Mechanics: ``attach`` registers forward hooks (no new modules, no new parameters, state-dict keys
unchanged) on the last ``num_blocks`` blocks of ``model.backbone.net.blocks`` and on the backbone:

* backbone pre-hook: takes the patch mean colours of the input image for the hybrid matrix;
* block hook: replaces the block output with :func:`~wsss.refiners.doei.block.doei_block_output`,
  the strengths growing with depth (:func:`~wsss.refiners.doei.ops.depth_strengths`);
* backbone hook: on a per-class-token host, reports the decoupled attention rows in
  ``BackboneOutput.attentions`` so attention CAMs read what the blocks used.

On a single-class-token ViT (e.g. with ToCo) the class-wise branch has no class-specific token and
is off; the patch-wise branch acts alone. The confidence of each block comes from the host's own
classifier head applied to the block's patch tokens (after the final norm), classes present where
that head's image logit is positive; a per-class-token host (MCTformer) multiplies the map by its
class-to-patch attention first.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import nn

from wsss.errors import ConfigError
from wsss.refiners.base import Refiner
from wsss.refiners.doei.block import DOEISettings, HostView, doei_block_output
from wsss.refiners.doei.ops import depth_strengths, patch_rgb

# the demo MCTformer-V2 host: the demo ViT's size with one class token per class, V2's head (3x3 conv,
# average pooling) and no auxiliary head
MCTFORMER_DEMO = {"backbone": "mctformer_custom", "pooling": "gap", "aux_layer": None}


class DOEIRefiner(Refiner):
    """DOEI on the last ``num_blocks`` blocks of a ViT classifier.

    Args:
        num_blocks: wrapped blocks L, counted from the last (spec: K = 3) [reconstruction].
        residual_scale: lambda of the residual injection; 0 leaves the model bit-identical.
        beta: patch-wise strength of the deepest wrapped block (0.1) [reconstruction].
        gamma: class-wise strength of the deepest wrapped block (0.2) [reconstruction].
        high, low: candidate thresholds on the normalised confidence (ToCo's 0.7 / 0.25 reused)
            [reconstruction].
        hybrid: ``"sum"`` (spec C.2.3: softmax of a1 R + a2 E + a3 A) or ``"rgb_weighted"`` (the
            figure read as RGB-weighted embedding similarity added to attention) [reconstruction].
        hybrid_weights: (a1, a2, a3) = (1/3, 1/3, 1/3) [reconstruction].
        rgb_sigma: colour-similarity width in [0, 1] RGB (0.1) [reconstruction].
        hybrid_temperature: softmax temperature of the hybrid matrix (1.0, i.e. none) [reconstruction].
        class_wise, patch_wise: switch each branch.
        in_training: active while the model is in train mode (training forwards).
        in_inference: active in eval mode (validation and CAM export).
    """

    name = "doei"
    families = ("vit",)

    @classmethod
    def demo_entries(cls) -> dict[str, dict[str, Any]]:
        """On the demo budget: DOEI stacked on ToCo on the demo ViT (``configs/demo/doei_toco_vit.yaml``)
        and on the MCTformer-V2 host of the same size (``configs/demo/doei_mctformer.yaml``; the host
        alone is ``configs/demo/mctformer.yaml``). The last 3 of 6 blocks wrapped, spec defaults."""
        from wsss.refiners.toco import ToCoRefiner

        toco = ToCoRefiner.demo_entries()["toco_vit"]["overrides"]["classifier"]["refiners"]
        doei = {"name": "doei", "num_blocks": 3}
        return {
            "doei_toco_vit": {"family": "vit", "overrides": {"classifier": {"refiners": [*toco, doei]}}},
            "doei_mctformer": {"family": "vit", "overrides": {
                "classifier": {**MCTFORMER_DEMO, "refiners": [doei]},
                "cams": {"method": "mctformer", "preset": "irn", "scales": [1.0, 0.5, 1.5],
                         "overlay_methods": ["mctformer", "mctformer_attn", "mctformer_patchcam", "gradcam"]}}},
        }

    def __init__(
        self,
        num_blocks: int = 3,
        residual_scale: float = 1.0,
        beta: float = 0.1,
        gamma: float = 0.2,
        high: float = 0.7,
        low: float = 0.25,
        hybrid: str = "sum",
        hybrid_weights: tuple[float, float, float] = (1 / 3, 1 / 3, 1 / 3),
        rgb_sigma: float = 0.1,
        hybrid_temperature: float = 1.0,
        class_wise: bool = True,
        patch_wise: bool = True,
        in_training: bool = True,
        in_inference: bool = True,
    ):
        super().__init__()
        if num_blocks < 1:
            raise ConfigError(f"doei: num_blocks must be >= 1; got {num_blocks}")
        if hybrid not in ("sum", "rgb_weighted"):
            raise ConfigError(f"doei: hybrid must be 'sum' or 'rgb_weighted'; got {hybrid!r}")
        if not 0.0 <= gamma < 1.0:
            raise ConfigError(f"doei: gamma must be in [0, 1); got {gamma}")
        if not low < high:
            raise ConfigError(f"doei: low ({low}) must be below high ({high})")
        if len(hybrid_weights) != 3:
            raise ConfigError(f"doei: hybrid_weights needs 3 values (a1, a2, a3); got {hybrid_weights}")
        self.num_blocks = num_blocks
        self.settings = DOEISettings(high=high, low=low, residual_scale=residual_scale, hybrid=hybrid,
                                     hybrid_weights=tuple(float(w) for w in hybrid_weights), rgb_sigma=rgb_sigma,
                                     hybrid_temperature=hybrid_temperature, class_wise=class_wise,
                                     patch_wise=patch_wise)
        self.betas = depth_strengths(beta, num_blocks)
        self.gammas = depth_strengths(gamma, num_blocks)
        self.in_training = in_training
        self.in_inference = in_inference
        # plain containers: the host is not a submodule of the refiner (no parameters, no state)
        self._hosts: list[HostView] = []
        self._handles: list[Any] = []
        self._context: dict[str, Any] = {}

    def attach(self, model: nn.Module) -> None:
        """Hook the last ``num_blocks`` blocks of ``model.backbone`` (a wsss ViT) and the backbone."""
        backbone = getattr(model, "backbone", None)
        net = getattr(backbone, "net", None)
        if backbone is None or not getattr(backbone, "is_vit", False) or not hasattr(net, "blocks"):
            raise ConfigError("doei: the refiner needs a ViT backbone (timm blocks); set classifier.backbone "
                              "to a vit_* / deit_* / mctformer_* model")
        blocks = list(net.blocks)
        if self.num_blocks > len(blocks):
            raise ConfigError(f"doei: num_blocks {self.num_blocks} exceeds the backbone's {len(blocks)} blocks")
        self.detach()
        self._hosts = [HostView(head=model.head, norm=net.norm, num_prefix=backbone.num_prefix_tokens,
                                num_classes=model.head.classifier.out_channels)]
        self._handles.append(backbone.register_forward_pre_hook(self._take_image, with_kwargs=True))
        self._handles.append(backbone.register_forward_hook(self._report_attention))
        first = len(blocks) - self.num_blocks
        for k, block in enumerate(blocks[first:]):
            self._handles.append(block.register_forward_hook(partial(self._block_hook, first + k, k)))

    def detach(self) -> None:
        """Remove the hooks (the model is then the plain model again)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._hosts.clear()

    def active(self, module: nn.Module) -> bool:
        """Whether the operator runs for a forward of ``module`` in its current mode."""
        if self.settings.residual_scale == 0:
            return False
        return self.in_training if module.training else self.in_inference

    def _take_image(self, backbone: nn.Module, args: tuple, kwargs: dict) -> None:
        image = args[0] if args else kwargs["x"]
        self._context = {"grid": (image.shape[-2] // backbone.patch_size, image.shape[-1] // backbone.patch_size),
                         "attentions": {}}
        if self.active(backbone):
            with torch.no_grad():
                self._context["rgb"] = patch_rgb(image.detach(), backbone.patch_size, backbone.mean, backbone.std)

    def _block_hook(self, index: int, depth: int, block: nn.Module, args: tuple, output: torch.Tensor):
        if not self.active(block) or "rgb" not in self._context:
            return None
        tokens, effective = doei_block_output(block, args[0], output, self._hosts[0], self._context["rgb"],
                                              self._context["grid"], self.settings, self.betas[depth],
                                              self.gammas[depth])
        if effective is not None:
            self._context["attentions"][index] = effective
        return tokens

    def _report_attention(self, backbone: nn.Module, args: tuple, output: Any) -> Any:
        replaced = self._context.get("attentions", {})
        if output.attentions is not None and replaced:
            output.attentions = [replaced.get(i, a) for i, a in enumerate(output.attentions)]
        self._context = {}
        return output
