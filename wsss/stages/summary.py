"""The headline numbers of a run and their text table."""

from __future__ import annotations

from typing import Any

# rows shown only when the run made them (pseudo.par, affinity.enabled)
OPTIONAL_ROWS = {"pseudo_par_miou", "pseudo_rw_miou"}
SUMMARY_ROWS = [
    ("seed_cam_miou", "seed CAM (best threshold)"),
    ("pseudo_miou", "pseudo masks"),
    ("pseudo_crf_miou", "pseudo masks + CRF"),
    ("pseudo_par_miou", "pseudo masks + PAR"),
    ("pseudo_rw_miou", "pseudo masks + random walk"),
    ("seg_miou", "segmenter on pseudo masks (val)"),
    ("fully_supervised_miou", "fully supervised (val)"),
]


def summary_table(summary: dict[str, Any]) -> str:
    """The summary as a fixed-width text table (mIoU in percent)."""
    lines = [f"{'result':<36}{'mIoU %':>8}", "-" * 44]
    for key, label in SUMMARY_ROWS:
        value = summary.get(key)
        if value is None and key in OPTIONAL_ROWS:
            continue
        lines.append(f"{label:<36}{'-' if value is None else f'{value:.2f}':>8}")
    if summary.get("seed_cam_threshold") is not None:
        lines.append(f"{'seed CAM best threshold':<36}{summary['seed_cam_threshold']:>8.2f}")
    if summary.get("wsss_over_full") is not None:
        lines.append(f"{'WSSS / fully supervised':<36}{summary['wsss_over_full']:>8.3f}")
    return "\n".join(lines)
