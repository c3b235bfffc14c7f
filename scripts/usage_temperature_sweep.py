"""The USAGE-style refiner against its plain baseline on the built-in data, and seed-CAM mIoU against the
generation temperature, per backbone family: does the rule (CNN: higher T, ViT: lower) point the right way?

    python scripts/usage_temperature_sweep.py --out runs/usage_sweep [--families cnn vit]
        [--temperatures 0.1 1 10] [--fast] [--docs docs]

For each family one ``wsss compare`` (stages train-cls, cams, pseudo) into ``OUT/<family>`` runs
``configs/demo/<family>.yaml`` (no refiner), ``configs/demo/usage_<family>.yaml`` (the refiner as
configured: rule temperature + consistency) and one variant of the plain config per temperature with
only the generation term (``<family>_T<t>``: the refiner entry of ``usage_<family>.yaml`` with that
temperature and ``consistency_weight: 0``, so T acts on that term alone).
``--fast`` uses the smaller budget of ``configs/demo/fast.yaml`` (240 images, 120 steps) with its
images generated under ``OUT`` (a set generated with other settings under the same root would
replace the demo-sized one under ``data/``). Writes ``usage_temperature_sweep.png`` and ``.md`` (the
seed-mIoU table, then the leaderboards of the comparisons) into ``--docs``.
Rows also come from comparisons run beside it into ``OUT/<family>_*/`` (e.g. more temperatures in
parallel). A rerun resumes the comparisons.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import matplotlib
import yaml

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from wsss.cli import main as wsss_main  # noqa: E402
from wsss.compare.leaderboard import best_entries, build_rows, markdown  # noqa: E402
from wsss.io import atomic_write_text  # noqa: E402
from wsss.stages.records import read_stages  # noqa: E402

STAGES = "train-cls,cams,pseudo"
RULE = {"cnn": 1.0, "vit": 0.1}
CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "demo"
# `--fast`: the data and step budget of configs/demo/fast.yaml (`wsss demo --fast`)
FAST = {"data": {"kwargs": {"n_train": 240, "n_val": 80}}, "classifier": {"max_steps": 120}}


def flow(value) -> str:
    """A config value in the one-line YAML form command-line overrides take."""
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def variant_name(family: str, temperature: float) -> str:
    return f"{family}_T{temperature:g}"


def usage_entry(family: str) -> dict:
    """The ``usage`` refiner entry of ``configs/demo/usage_<family>.yaml``: the temperature variants keep
    its other settings (e.g. the CNN's ``generation_weight``) so that only T and the consistency differ."""
    path = CONFIGS / f"usage_{family}.yaml"
    refiners = yaml.safe_load(path.read_text())["classifier"]["refiners"]
    return next(entry for entry in refiners if entry["name"] == "usage")


def run_family(family: str, temperatures: list[float], out: Path, fast: bool) -> int:
    argv = ["compare", str(CONFIGS / f"{family}.yaml"), str(CONFIGS / f"usage_{family}.yaml"),
            "--out", str(out / family), "--stages", STAGES]
    if fast:
        common = [f"--{section}.{name}={flow(value)}" for section, fields in FAST.items()
                  for name, value in fields.items()]
        argv.append("--set=" + shlex.join(common + [f"--data.root={out / 'data'}"]))
    usage = usage_entry(family)
    for t in temperatures:
        refiner = flow([{**usage, "temperature": t, "consistency_weight": 0}])
        argv += ["--variant", f"{variant_name(family, t)}:" + shlex.quote(f"--classifier.refiners={refiner}")]
    return wsss_main(argv)


def family_rows(out: Path, family: str) -> list[dict]:
    """Leaderboard rows of every entry of ``family`` under ``OUT/<family>*/`` (comparisons run beside
    each other count too); an entry run in several comparisons counts where it finished."""
    entries: dict[str, dict] = {}
    for stages in sorted(out.glob(f"{family}*/*/stages.json")):
        records = read_stages(stages.parent)
        if stages.parent.name not in entries or "pseudo" in records:
            entries[stages.parent.name] = {"name": stages.parent.name, "records": records, "masks": "pseudo_crf",
                                           "status": "done" if "pseudo" in records else "not finished"}
    return build_rows(list(entries.values()))


def write_report(families: list[str], temperatures: list[float], out: Path, docs: Path) -> None:
    lines = ["| family | rule T | " + " | ".join(f"T={t:g}" for t in temperatures)
             + " | no refiner | usage (rule T + consistency) |",
             "|---|---:|" + "---:|" * (len(temperatures) + 2)]
    boards = []
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for family, colour in zip(families, ("tab:blue", "tab:orange"), strict=False):
        rows = family_rows(out, family)
        boards.append((family, markdown(rows, best_entries(rows))))
        scores = {row["entry"]: row["seed_cam_miou"] for row in rows}
        values = [scores.get(variant_name(family, t)) for t in temperatures]
        ref = scores.get(family)
        cells = ["-" if v is None else (f"**{v:.2f}**" if t == RULE[family] else f"{v:.2f}")
                 for t, v in zip(temperatures, values, strict=True)]
        full = scores.get(f"usage_{family}")
        lines.append(f"| {family} | {RULE[family]:g} | " + " | ".join(cells)
                     + f" | {'-' if ref is None else f'{ref:.2f}'} | {'-' if full is None else f'{full:.2f}'} |")
        points = [(t, v) for t, v in zip(temperatures, values, strict=True) if v is not None]
        if points:
            ax.plot(*zip(*points, strict=True), marker="o", color=colour, label=f"{family} (rule T={RULE[family]:g})")
        if ref is not None:
            ax.axhline(ref, color=colour, linestyle="--", linewidth=1, label=f"{family} without refiner")
        if full is not None:
            ax.plot([RULE[family]], [full], marker="*", markersize=11, linestyle="none", color=colour,
                    label=f"usage_{family} (+ consistency)")
    ax.set_xscale("log")
    ax.set_xlabel("generation temperature T")
    ax.set_ylabel("seed CAM mIoU (train, %)")
    ax.set_title("USAGE-style generation loss: seed mIoU vs T")
    ax.legend(fontsize=8)
    docs.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(docs / "usage_temperature_sweep.png", dpi=120)
    plt.close(fig)
    for family, board in boards:
        lines += ["", f"All {family} entries (`wsss compare` leaderboard columns, from their stage records):", "",
                  board.rstrip()]
    atomic_write_text(docs / "usage_temperature_sweep.md", "\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="comparison folders, one per family")
    parser.add_argument("--families", nargs="+", default=["cnn", "vit"], choices=sorted(RULE))
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
