"""ESOL's two named stages within one classifier run (spec ``esol_ppl_excel.md`` A.1, A.6)."""

from __future__ import annotations

from wsss.errors import ConfigError


def esol_stages(max_steps: int, expansion_fraction: float = 0.5) -> list[tuple[str, int]]:
    """``[("expansion", 0), ("shrinkage", first)]`` with ``first = round(max_steps * expansion_fraction)``
    (at least 1); only the expansion stage when ``first >= max_steps`` (``expansion_fraction: 1``)."""
    if not 0.0 < expansion_fraction <= 1.0:
        raise ConfigError(f"esol: expansion_fraction must be in (0, 1]; got {expansion_fraction}")
    first = max(1, round(max_steps * expansion_fraction))
    if first >= max_steps:
        return [("expansion", 0)]
    return [("expansion", 0), ("shrinkage", first)]
