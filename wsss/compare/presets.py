"""Presets of ``wsss compare`` on the built-in data.

``refiners``: the plain CNN and the plain ViT of the demo, and every entry each registered refiner
declares (``Refiner.demo_entries``) on top of the plain config of its backbone family, all on the
demo budget and seed. Registering a refiner adds its entries. ``configs/demo/<entry>.yaml`` spells
each entry out as a file (``tests/test_compare.py`` keeps them in step).
"""

from __future__ import annotations

import copy
from typing import Any

from wsss.errors import ConfigError

PLAIN: dict[str, dict[str, Any]] = {
    # the `wsss demo` settings: EfficientNet-Lite0 with ImageNet weights, GAP, CAM (configs/demo/cnn.yaml)
    "cnn": {},
    # a ViT-Tiny-shaped model trained from scratch (no ViT ImageNet weights install offline), GMP head and
    # an auxiliary head on block -3 as ToCo has them (configs/demo/vit.yaml)
    "vit": {
        "classifier": {
            "backbone": "vit_custom", "backbone_kwargs": {"depth": 6, "embed_dim": 192, "num_heads": 3},
            "pretrained": False, "pooling": "gmp", "aux_layer": -3, "optimizer": "adamw", "lr": 5.0e-4,
            "head_lr_mult": 10, "weight_decay": 0.01, "warmup_steps": 50, "max_steps": 600, "batch_size": 16,
            "crop_size": 128,
        },
        "cams": {"method": "cam", "preset": "toco", "scales": None},
        "pseudo": {"crf": True},
    },
}


def deep_merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` merged in: nested dicts merge, every other value (lists too) replaces."""
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def refiner_preset() -> dict[str, dict[str, Any]]:
    """``{entry name: config overrides}`` of the ``refiners`` preset, plain entries first."""
    from wsss.refiners import REFINERS

    entries = {name: copy.deepcopy(overrides) for name, overrides in PLAIN.items()}
    for refiner_name, cls in REFINERS.items():
        for entry, spec in cls.demo_entries().items():
            family = spec["family"]
            if family not in cls.families or family not in PLAIN:
                raise ConfigError(f"refiner {refiner_name!r}: demo entry {entry!r} is for a {family} backbone, "
                                  f"which it does not support")
            if entry in entries:
                raise ConfigError(f"refiner {refiner_name!r}: demo entry name {entry!r} is taken")
            entries[entry] = deep_merge(PLAIN[family], spec.get("overrides", {}))
    return entries


PRESETS = {"refiners": refiner_preset}


def preset_entries(name: str) -> dict[str, dict[str, Any]]:
    if name not in PRESETS:
        raise ConfigError(f"--preset: unknown preset {name!r}; choose from {sorted(PRESETS)}")
    return PRESETS[name]()
