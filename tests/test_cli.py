from pathlib import Path

import pytest
import yaml

from wsss.cli import SUBCOMMANDS, build_parser, expand_argv, main, run_config
from wsss.config import RunConfig
from wsss.demo import FAST_PRESET

CONFIGS = sorted((Path(__file__).parents[1] / "configs").rglob("*.yaml"))


def parse(argv):
    parser = build_parser()
    parsed = parser.parse_args(expand_argv(argv))
    return run_config(parser.instantiate(parsed)[parsed.command])


def test_defaults_are_the_demo_run():
    cfg = parse(["demo"])
    assert cfg == RunConfig()
    assert cfg.data.name == "synthetic"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(p.parents[1])))
def test_every_shipped_config_parses(path):
    cfg = parse(["pipeline", str(path)])
    raw = yaml.safe_load(path.read_text())
    assert cfg.out == raw.get("out", RunConfig().out)
    for section in ("classifier", "segmenter"):
        for key, value in (raw.get(section) or {}).items():
            got = getattr(getattr(cfg, section), key)
            assert (list(got) if isinstance(got, tuple) else got) == value, (path, section, key)


def test_command_line_overrides_the_config_file(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("out: from_file\nclassifier: {max_steps: 7, backbone: resnet50}\n")
    cfg = parse(["train-cls", str(cfg_file), "--classifier.max_steps", "3"])
    assert (cfg.out, cfg.classifier.max_steps, cfg.classifier.backbone) == ("from_file", 3, "resnet50")


def test_fast_preset_matches_its_config_file_and_yields_to_explicit_overrides():
    assert yaml.safe_load((Path(__file__).parents[1] / "configs/demo/fast.yaml").read_text()) == FAST_PRESET
    cfg = parse(["demo", "--fast", "--segmenter.max_steps", "11"])
    assert cfg.classifier.max_steps == FAST_PRESET["classifier"]["max_steps"]
    assert cfg.segmenter.max_steps == 11
    assert cfg.out == FAST_PRESET["out"]


def test_unknown_field_is_named_with_its_source_and_the_closest_names(tmp_path, capsys):
    assert main(["pipeline", "--classifier.max_stepz", "3"]) == 2
    err = capsys.readouterr().err
    assert "command line: unknown field 'classifier.max_stepz'; did you mean classifier.max_steps" in err
    assert "usage:" not in err and len(err.splitlines()) == 1
    bad = tmp_path / "bad.yaml"
    bad.write_text("classifier:\n  backbone: resnet18\n  max_step: 3\n")
    assert main(["pipeline", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}: unknown field 'classifier.max_step'; did you mean classifier.max_steps" in err


def test_a_value_of_the_wrong_type_is_one_line_naming_the_field(capsys):
    assert main(["pipeline", "--classifier.max_steps", "many"]) == 2
    err = capsys.readouterr().err
    assert "classifier.max_steps" in err and "many" in err and "usage:" not in err


def test_user_errors_exit_2_with_a_message(tmp_path, capsys):
    code = main(["cams", "--out", str(tmp_path), "--data.root", str(tmp_path / "synthetic")])
    assert code == 2
    err = capsys.readouterr().err
    assert "classifier.ckpt" in err and "wsss train-cls" in err


@pytest.mark.parametrize("command", [c for c in SUBCOMMANDS if c != "compare"])
def test_every_command_has_a_help_page(command, capsys):
    assert main([command, "--help"]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: wsss {command}") and "--out" in text
