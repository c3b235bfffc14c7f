"""Optimisers with a higher learning rate for new layers, and the warm-up + poly schedule."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from wsss.errors import ConfigError


def lr_multiplier(step: int, max_steps: int, warmup_steps: int = 0, warmup_ratio: float = 1e-6,
                  power: float = 0.9) -> float:
    """Learning-rate factor at 0-based ``step``, as ToCo's ``PolyWarmupAdamW``.

    During warm-up the factor rises linearly from ``warmup_ratio`` to 1:
    ``warmup_ratio + (1 - warmup_ratio) * step / warmup_steps``. After it the factor is the poly decay
    ``(1 - step / max_steps) ** power``, not offset by the warm-up (so it drops a little when
    warm-up ends, as in the official code).
    """
    if step < warmup_steps:
        return warmup_ratio + (1.0 - warmup_ratio) * step / warmup_steps
    return max(0.0, 1.0 - step / max_steps) ** power


def make_optimizer(name: str, groups: Iterable[tuple[list[nn.Parameter], float]], weight_decay: float,
                   momentum: float = 0.9, betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.Optimizer:
    """``sgd`` or ``adamw`` over parameter groups given as (params, lr)."""
    param_groups = [{"params": [p for p in params if p.requires_grad], "lr": lr} for params, lr in groups]
    param_groups = [g for g in param_groups if g["params"]]
    if name == "sgd":
        return torch.optim.SGD(param_groups, momentum=momentum, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(param_groups, betas=tuple(betas), weight_decay=weight_decay, eps=1e-8)
    raise ConfigError(f"optimizer must be 'sgd' or 'adamw'; got {name!r}")


def stage_spans(starts: list[int], max_steps: int) -> list[tuple[int, int]]:
    """``[(first, end), ...]`` of consecutive stages from their first steps (end exclusive)."""
    starts = sorted(set(s for s in starts if 0 <= s < max_steps) | {0})
    return list(zip(starts, starts[1:] + [max_steps]))


def per_step_scheduler(optimizer: torch.optim.Optimizer, max_steps: int, warmup_steps: int,
                       warmup_ratio: float = 1e-6, power: float = 0.9,
                       spans: list[tuple[int, int]] | None = None) -> dict:
    """A Lightning scheduler config stepping :func:`lr_multiplier` every iteration.

    With ``spans`` (from :func:`stage_spans`) the warm-up and poly decay restart at the first step of
    each span and run over the span's length."""
    def multiplier(step: int) -> float:
        for first, end in spans or [(0, max_steps)]:
            if first <= step < end:
                return lr_multiplier(step - first, end - first, warmup_steps, warmup_ratio, power)
        return lr_multiplier(step, max_steps, warmup_steps, warmup_ratio, power)

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, multiplier)
    return {"scheduler": schedule, "interval": "step", "frequency": 1}
