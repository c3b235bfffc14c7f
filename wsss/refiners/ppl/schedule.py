"""PPL's schedule (spec ``esol_ppl_excel.md`` B.3, a reconstruction).

Implicit variant: one stage per entry of ``split_blocks``, in order, the run split evenly between
them; stage ``k`` trains the patch branch that splits after block ``split_blocks[k]``. Explicit
variant: one stage, every branch at once.
"""

from __future__ import annotations

from collections.abc import Sequence

from wsss.errors import ConfigError


def stage_name(k: int) -> str:
    """Name of implicit stage ``k`` (0-based): ``split1``, ``split2``, ..."""
    return f"split{k + 1}"


def stage_starts(n_stages: int, max_steps: int) -> list[int]:
    """First step of each of ``n_stages`` stages splitting ``max_steps`` evenly (stage 0 at 0)."""
    return [k * max_steps // n_stages for k in range(n_stages)]


def implicit_stages(n_stages: int, max_steps: int) -> list[tuple[str, int]]:
    """``[(name, first_step)]`` of the implicit variant."""
    return [(stage_name(k), first) for k, first in enumerate(stage_starts(n_stages, max_steps))]


def per_branch(grids: int | Sequence[int], n: int) -> tuple[int, ...]:
    """``grids`` (one int for all, or one per split) as a tuple of ``n`` grid sizes >= 1."""
    values = (int(grids),) * n if isinstance(grids, int) else tuple(int(g) for g in grids)
    if len(values) != n:
        raise ConfigError(f"ppl: grids needs one entry per split_blocks entry ({n}); got {list(values)}")
    if any(g < 1 for g in values):
        raise ConfigError(f"ppl: grid sizes must be >= 1; got {list(values)}")
    return values
