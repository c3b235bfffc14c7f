"""Settings of ``wsss demo``: the :class:`~wsss.config.RunConfig` defaults, and the ``--fast`` preset.

``configs/demo/default.yaml`` and ``configs/demo/fast.yaml`` spell the same settings out as files
(``tests/test_cli.py`` keeps them in step).
"""

from __future__ import annotations

from typing import Any

import yaml

FAST_PRESET: dict[str, Any] = {
    "out": "runs/demo_fast",
    "data": {"kwargs": {"n_train": 240, "n_val": 80}},
    "classifier": {"max_steps": 120},
    "cams": {"scales": [1.0, 0.5]},
    "segmenter": {"max_steps": 120, "batch_size": 8},
}


def fast_preset_yaml() -> str:
    return yaml.safe_dump(FAST_PRESET, sort_keys=False)
