"""Refiners: training-time and CAM-time plug-ins (see :mod:`wsss.refiners.base`).

Each refiner lives in a subpackage of its own (``wsss/refiners/<name>/``: its losses, heads and
schedule as modules inside). ``REFINERS`` maps a config name to its class; :func:`build_refiners`
turns the config list (``[{"name": "toco", ...}, ...]``) into refiner instances, called in order by
the modules.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from wsss.cams import register_cam_method
from wsss.errors import ConfigError
from wsss.refiners.base import Refiner
from wsss.refiners.doei import DOEIRefiner
from wsss.refiners.esol import ESOLRefiner
from wsss.refiners.excel import CLIP_CAM_METHODS
from wsss.refiners.ppl import PPLRefiner
from wsss.refiners.toco import ToCoRefiner
from wsss.refiners.usage import UsageRefiner

REFINERS: dict[str, type[Refiner]] = {"none": Refiner, "toco": ToCoRefiner, "usage": UsageRefiner,
                                     "esol": ESOLRefiner, "ppl": PPLRefiner, "doei": DOEIRefiner}

# ExCEL and CLIP-ES are training-free CAM methods with their own CLIP model, not classifier refiners.
for _method in CLIP_CAM_METHODS:
    register_cam_method(_method)


def build_refiner(name: str, **kwargs: Any) -> Refiner:
    """Instantiate the refiner registered as ``name`` with ``kwargs``."""
    if name not in REFINERS:
        raise ConfigError(f"refiners: unknown refiner {name!r}; choose one of {sorted(REFINERS)}")
    try:
        return REFINERS[name](**kwargs)
    except TypeError as err:
        raise ConfigError(f"refiners: bad options for refiner {name!r}: {err}") from err


def build_refiners(specs: Sequence[Mapping[str, Any]] | None) -> list[Refiner]:
    """Instantiate a list of refiner configs, each a mapping with a ``name`` key plus options."""
    refiners = []
    for i, spec in enumerate(specs or []):
        if not isinstance(spec, Mapping) or "name" not in spec:
            raise ConfigError(f"refiners[{i}]: each refiner entry needs a 'name' key; got {spec!r}")
        options = {k: v for k, v in spec.items() if k != "name"}
        refiners.append(build_refiner(spec["name"], **options))
    return refiners


def refiners_for(family: str) -> list[str]:
    """Names of the registered refiners (``none`` aside) that support the backbone ``family``."""
    return [name for name, cls in REFINERS.items() if name != "none" and family in cls.families]


__all__ = ["DOEIRefiner", "ESOLRefiner", "PPLRefiner", "REFINERS", "Refiner", "ToCoRefiner", "UsageRefiner",
           "build_refiner", "build_refiners", "refiners_for"]
