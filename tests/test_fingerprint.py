"""Stage fingerprints: equal settings skip a finished stage, other settings stop with the changed
fields, --overwrite redoes a stage and the stages made from it, speed-only fields change nothing."""

import json

import pytest

from wsss.cli import main
from wsss.config import RunConfig
from wsss.stages.fingerprint import stage_fingerprint
from wsss.stages.records import read_stages

TINY = ["--data.kwargs", "{n_train: 12, n_val: 4, image_size: 48}", "--classifier.backbone", "resnet10t",
        "--classifier.pretrained", "false", "--classifier.max_steps", "2", "--classifier.batch_size", "4",
        "--classifier.crop_size", "48", "--cams.scales", "[1.0]", "--pseudo.workers", "1",
        "--trainer.accelerator", "cpu", "--trainer.loggers", "[]", "--progress", "false"]


@pytest.fixture
def run(tmp_path):
    base = ["--out", str(tmp_path / "out"), "--data.root", str(tmp_path / "synthetic"), *TINY]

    def call(command, *extra):
        return main([command, *base, *extra])

    for command in ("train-cls", "cams", "pseudo"):
        assert call(command) == 0
    return tmp_path / "out", call


def test_a_rerun_with_the_same_settings_skips_and_speed_fields_do_not_count(run):
    out, call = run
    before = read_stages(out)
    assert call("train-cls", "--data.num_workers", "1") == 0
    assert call("pseudo", "--pseudo.workers", "2", "--progress", "true") == 0
    after = read_stages(out)
    assert after["train_cls"]["last_run"] == after["pseudo"]["last_run"] == "skipped"
    assert after["pseudo"]["seconds"] == before["pseudo"]["seconds"]


def test_changed_settings_stop_with_the_changed_fields_and_the_ways_on(run, capsys):
    out, call = run
    before = (out / "stages.json").read_text()
    assert call("train-cls", "--classifier.max_steps", "3") == 2
    err = capsys.readouterr().err
    assert "classifier.max_steps: 2 -> 3" in err and "--overwrite train-cls" in err and "new --out" in err
    assert "Traceback" not in err
    assert call("pseudo", "--pseudo.bg_threshold", "0.6") == 2
    err = capsys.readouterr().err
    assert "pseudo.bg_threshold: null -> 0.6" in err
    assert (out / "stages.json").read_text() == before


def test_overwrite_redoes_the_stage_and_removes_the_stages_made_from_it(run):
    out, call = run
    assert call("train-cls", "--classifier.max_steps", "3", "--overwrite", "train-cls") == 0
    stages = read_stages(out)
    assert stages["train_cls"]["made_from"]["fields"]["classifier.max_steps"] == 3
    assert "cams" not in stages and "pseudo" not in stages
    assert not (out / "cams").exists() and not (out / "pseudo").exists()
    assert call("cams", "--classifier.max_steps", "3") == 0
    assert read_stages(out)["cams"]["made_from"]["inputs"]["train_cls"] == stages["train_cls"]["fingerprint"]


def test_pseudo_with_another_threshold_rewrites_every_mask_and_the_record_says_so(run):
    out, call = run
    masks = sorted((out / "pseudo").glob("*.png"))
    assert call("pseudo", "--pseudo.bg_threshold", "0.99", "--overwrite", "pseudo") == 0
    record = read_stages(out)["pseudo"]
    assert record["bg_threshold"] == 0.99 and record["complete"]
    assert sorted((out / "pseudo").glob("*.png")) == masks
    metrics = json.loads((out / "eval" / "pseudo" / "metrics.json").read_text())
    assert metrics["miou"] == record["pseudo_miou"]


def test_an_interrupted_stage_resumes_only_with_its_own_settings(run, capsys):
    out, call = run
    stages = read_stages(out)
    stages["cams"]["complete"] = False
    (out / "stages.json").write_text(json.dumps(stages))
    next(iter((out / "cams").glob("*.npz"))).unlink()
    assert call("cams", "--cams.flip", "false") == 2
    assert "cams.flip: true -> false" in capsys.readouterr().err
    assert call("cams") == 0
    assert read_stages(out)["cams"]["complete"] and len(list((out / "cams").glob("*.npz"))) == 12


@pytest.mark.parametrize(("stage", "added", "neighbour", "value", "shown"), [
    ("train_cls", "classifier.prior_bias", "classifier.pooling", True, "true"),
    ("pseudo_rw", "affinity.rw_par", "affinity.exp_times", True, "true"),
    ("pseudo_rw", "affinity.rw_background", "affinity.exp_times", "walk", '"walk"'),
    ("pseudo_rw", "affinity.rw_bg_power", "affinity.exp_times", 0.8, "0.8"),
    ("pseudo_rw", "affinity.rw_cam_power", "affinity.exp_times", 2.0, "2.0")])
def test_a_field_added_later_counts_only_away_from_the_default_older_runs_were_made_with(stage, added, neighbour,
                                                                                          value, shown):
    cfg = RunConfig()
    before = stage_fingerprint(cfg, stage)
    assert added not in before.fields and neighbour in before.fields
    section, name = added.split(".")
    setattr(getattr(cfg, section), name, value)
    after = stage_fingerprint(cfg, stage)
    assert after.fields[added] == value
    assert after.digest != before.digest
    assert after.changes(before.record()) == [f"{added}: \"<unset>\" -> {shown}"]
