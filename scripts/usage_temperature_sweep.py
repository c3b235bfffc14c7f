"""Seed-CAM mIoU against the USAGE-style generation temperature on the built-in data, per backbone
family, to see whether the rule (CNN: higher temperature, ViT: lower) points the right way here.

    python scripts/usage_temperature_sweep.py --out runs/usage_sweep [--families cnn vit]
        [--temperatures 0.1 1 10] [--fast] [--docs docs]

For each family one ``wsss compare`` runs, on the plain demo config of that family
(``wsss.compare.presets.PLAIN``, the baseline of ``--preset refiners``), a variant without refiner
(``<family>_none``, the reference) and one per temperature with only the generation term on
(``consistency_weight: 0``: the temperature acts on that term alone), through the stages train-cls,
cams, pseudo (no CRF: the seed CAM mIoU does not depend on it). ``--fast`` uses the smaller budget
of ``configs/demo/fast.yaml`` (240 images, 120 steps, CAM scales 1.0 and 0.5; the images are
generated under ``--out``, so a demo-sized set under ``data/`` is left alone). Writes
``usage_temperature_sweep.png`` and ``.md`` into ``--docs``; a rerun resumes the comparisons.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import matplotlib
import yaml

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from wsss.cli import main as wsss_main  # noqa: E402
from wsss.compare.presets import PLAIN  # noqa: E402
from wsss.io import atomic_write_text  # noqa: E402

STAGES = "train-cls,cams,pseudo"
RULE = {"cnn": 1.0, "vit": 0.1}
# `--fast`: the data, step and CAM-scale budget of configs/demo/fast.yaml (`wsss demo --fast`)
FAST = {"data": {"kwargs": {"n_train": 240, "n_val": 80}}, "classifier": {"max_steps": 120},
        "cams": {"scales": [1.0, 0.5]}}
NONE = "none"


def flow(value) -> str:
    """A config value in the one-line YAML form command-line overrides take."""
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def overrides(config: dict) -> list[str]:
    """``--section.field=value`` tokens of a ``{section: {field: value}}`` config."""
    return [f"--{section}.{name}={flow(value)}" for section, fields in config.items() for name, value in fields.items()]


def variant_name(family: str, temperature: float | str) -> str:
    return f"{family}_{temperature}" if temperature == NONE else f"{family}_T{temperature:g}"


def run_family(family: str, temperatures: list[float], out: Path, fast: bool) -> int:
    common = [t for t in overrides(PLAIN[family]) if not t.startswith("--pseudo.crf=")] + ["--pseudo.crf=false"]
    if fast:
        # a synthetic set of its own: one generated with other settings under the same root replaces it
        common += overrides(FAST) + [f"--data.root={out / 'data'}"]
    argv = ["compare", "--out", str(out / family), "--stages", STAGES, "--set=" + shlex.join(common),
            "--variant", f"{variant_name(family, NONE)}:--classifier.refiners=[]"]
    for t in temperatures:
        refiner = flow([{"name": "usage", "temperature": t, "consistency_weight": 0}])
        argv += ["--variant", f"{variant_name(family, t)}:" + shlex.quote(f"--classifier.refiners={refiner}")]
    return wsss_main(argv)


def seed_miou(leaderboard: Path) -> dict[str, float | None]:
    if not leaderboard.is_file():
        return {}
    return {row["entry"]: row.get("seed_cam_miou") for row in json.loads(leaderboard.read_text())["rows"]}


def write_report(families: list[str], temperatures: list[float], out: Path, docs: Path) -> None:
    lines = ["| family | rule T | " + " | ".join(f"T={t:g}" for t in temperatures) + " | no refiner |",
             "|---|---:|" + "---:|" * (len(temperatures) + 1)]
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for family, colour in zip(families, ("tab:blue", "tab:orange"), strict=False):
        scores = seed_miou(out / family / "leaderboard.json")
        values = [scores.get(variant_name(family, t)) for t in temperatures]
        ref = scores.get(variant_name(family, NONE))
        cells = ["-" if v is None else (f"**{v:.2f}**" if t == RULE[family] else f"{v:.2f}")
                 for t, v in zip(temperatures, values, strict=True)]
        lines.append(f"| {family} | {RULE[family]:g} | " + " | ".join(cells) + f" | {'-' if ref is None else f'{ref:.2f}'} |")
        points = [(t, v) for t, v in zip(temperatures, values, strict=True) if v is not None]
        if points:
            ax.plot(*zip(*points, strict=True), marker="o", color=colour, label=f"{family} (rule T={RULE[family]:g})")
        if ref is not None:
            ax.axhline(ref, color=colour, linestyle="--", linewidth=1, label=f"{family} without refiner")
    ax.set_xscale("log")
    ax.set_xlabel("generation temperature T")
    ax.set_ylabel("seed CAM mIoU (train, %)")
    ax.set_title("USAGE-style generation loss: seed mIoU vs T")
    ax.legend(fontsize=8)
    docs.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(docs / "usage_temperature_sweep.png", dpi=120)
    plt.close(fig)
    atomic_write_text(docs / "usage_temperature_sweep.md", "\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="comparison folders, one per family")
    parser.add_argument("--families", nargs="+", default=["cnn", "vit"], choices=sorted(PLAIN))
    parser.add_argument("--temperatures", nargs="+", type=float, default=[0.1, 1.0, 10.0])
    parser.add_argument("--fast", action="store_true", help="the budget of configs/demo/fast.yaml")
    parser.add_argument("--docs", type=Path, default=Path("docs"))
    parser.add_argument("--report-only", action="store_true", help="only redraw the plot and table")
    args = parser.parse_args(argv)
    status = 0
    if not args.report_only:
        for family in args.families:
            status = run_family(family, args.temperatures, args.out, args.fast) or status
    write_report(args.families, args.temperatures, args.out, args.docs)
    return status


if __name__ == "__main__":
    sys.exit(main())
