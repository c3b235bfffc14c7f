"""The ``wsss`` command.

Every subcommand reads the same run configuration (:class:`wsss.config.RunConfig`): a YAML file given
with ``--config FILE`` (or as the first positional argument) and any field overridden on the command
line with its dotted name, e.g. ``wsss pipeline configs/voc/cam_resnet50.yaml --classifier.max_steps 100``.
``wsss SUBCOMMAND --help`` lists every field with its default.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import fields
from typing import Any

from jsonargparse import ActionConfigFile, ArgumentParser, Namespace

from wsss.config import RunConfig
from wsss.demo import fast_preset_yaml
from wsss.errors import WSSSError

SUBCOMMANDS = {
    "train-cls": "train the image-level classifier (OUT/classifier/classifier.ckpt)",
    "cams": "export multi-scale CAMs of every image's positive classes (OUT/cams/<id>.npz)",
    "pseudo": "CAMs -> pseudo masks with and without dense CRF (OUT/pseudo*/<id>.png), seed-CAM sweep",
    "train-seg": "train the segmenter on pseudo masks (or ground truth) and evaluate it on val",
    "eval": "mIoU of a mask folder (--pred_dir) or a CAM folder threshold sweep (--cam_dir) against ground truth",
    "pipeline": "all stages on any dataset config; OUT/summary.json and OUT/report/index.html",
    "demo": "the pipeline on the built-in synthetic data (no download, a few minutes on a laptop CPU)",
}


def _subparser(name: str) -> ArgumentParser:
    parser = ArgumentParser(description=SUBCOMMANDS[name])
    parser.add_argument("-c", "--config", action=ActionConfigFile, help="YAML run configuration")
    parser.add_class_arguments(RunConfig)
    if name == "cams":
        parser.add_argument("--ckpt", type=str | None, default=None,
                            help="classifier checkpoint (default OUT/classifier/classifier.ckpt)")
    if name == "eval":
        parser.add_argument("--pred_dir", type=str | None, default=None, help="folder of predicted <id>.png masks")
        parser.add_argument("--cam_dir", type=str | None, default=None,
                            help="folder of <id>.npz CAMs: background-threshold sweep")
        parser.add_argument("--split", type=str | None, default=None,
                            help="split the predictions belong to (default data.cam_split for CAMs/pseudo "
                                 "masks, else data.val_split)")
        parser.add_argument("--eval_out", type=str | None, default=None,
                            help="folder for metrics.json and plots (default OUT/eval/<folder name>)")
    if name == "demo":
        parser.add_argument("--fast", action="store_true", help="a smaller, quicker run (under 3 minutes)")
    return parser


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="wsss", description="Weakly supervised semantic segmentation.")
    subcommands = parser.add_subcommands(dest="command")
    for name in SUBCOMMANDS:
        subcommands.add_subcommand(name, _subparser(name), help=SUBCOMMANDS[name])
    return parser


def expand_argv(argv: list[str]) -> list[str]:
    """Rewrite the two shorthands into plain jsonargparse arguments.

    ``wsss pipeline FILE.yaml ...`` means ``wsss pipeline --config FILE.yaml ...``; ``wsss demo --fast``
    puts the fast preset first, as a config, so that explicit overrides after it still win.
    """
    if len(argv) >= 2 and argv[0] in SUBCOMMANDS and argv[1].endswith((".yaml", ".yml")):
        argv = [argv[0], "--config", argv[1], *argv[2:]]
    if argv and argv[0] == "demo" and "--fast" in argv:
        argv = ["demo", "--config", fast_preset_yaml(), *argv[1:]]
    return argv


def run_config(ns: Namespace) -> RunConfig:
    """The RunConfig of a parsed (instantiated) subcommand namespace."""
    return RunConfig(**{f.name: ns[f.name] for f in fields(RunConfig)})


def dispatch(command: str, cfg: RunConfig, ns: Namespace) -> Any:
    if command == "train-cls":
        from wsss.stages.train_cls import run_train_cls

        return run_train_cls(cfg)
    if command == "cams":
        from wsss.stages.cams import run_cams

        return run_cams(cfg, ckpt=ns.ckpt)
    if command == "pseudo":
        from wsss.stages.pseudo import run_pseudo

        return run_pseudo(cfg)
    if command == "train-seg":
        from wsss.stages.train_seg import run_train_seg

        return run_train_seg(cfg)
    if command == "eval":
        from wsss.stages.evaluate import run_eval

        return run_eval(cfg, pred_dir=ns.pred_dir, cam_dir=ns.cam_dir, split=ns.split, out=ns.eval_out)
    if command in ("pipeline", "demo"):
        from wsss.stages.pipeline import run_pipeline

        return run_pipeline(cfg)
    raise AssertionError(command)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=os.environ.get("WSSS_LOG_LEVEL", "INFO"), format="[wsss] %(message)s")
    os.environ.setdefault("JSONARGPARSE_DEPRECATION_WARNINGS", "off")
    parser = build_parser()
    args = expand_argv(list(sys.argv[1:] if argv is None else argv))
    parsed = parser.parse_args(args)
    command = parsed.command
    ns = parser.instantiate(parsed)[command]
    try:
        dispatch(command, run_config(ns), ns)
    except WSSSError as exc:
        print(f"wsss {command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
