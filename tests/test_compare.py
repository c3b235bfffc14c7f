"""`wsss compare`: rows from stage records, shared stages computed once, resume, best marks, presets."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from wsss.cli import main, parse_run_config
from wsss.compare.leaderboard import COLUMNS, best_entries, build_rows, markdown
from wsss.compare.presets import preset_entries
from wsss.refiners import REFINERS, Refiner
from wsss.stages.records import read_stages

ROOT = Path(__file__).parents[1]


def tiny_config(tmp_path: Path) -> Path:
    cfg = {
        "data": {"root": str(tmp_path / "synthetic"), "kwargs": {"n_train": 16, "n_val": 8, "image_size": 64}},
        "trainer": {"accelerator": "cpu", "devices": 1, "loggers": ["csv"]},
        "classifier": {"backbone": "resnet10t", "pretrained": False, "max_steps": 3, "batch_size": 8,
                       "crop_size": 64, "warmup_steps": 1},
        "segmenter": {"backbone": "resnet10t", "pretrained": False, "max_steps": 2, "batch_size": 8,
                      "crop_size": 64, "warmup_steps": 1, "fully_supervised": False},
        "cams": {"scales": [1.0], "overlay_methods": ["cam"]},
        "pseudo": {"workers": 1},
        "report": False,
        "progress": False,
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("compare")
    config = tiny_config(tmp)
    out = tmp / "cmp"
    argv = ["compare", str(config), "--variant", "nocrf:--pseudo.crf=false --pseudo.bg_threshold=0.4",
            "--out", str(out), "--stages", "train-cls,cams,pseudo"]
    assert main(argv) == 0
    return out


def test_two_variants_give_two_rows_read_from_their_stage_records(compared):
    board = json.loads((compared / "leaderboard.json").read_text())
    assert [r["entry"] for r in board["rows"]] == ["tiny", "nocrf"]
    for row in board["rows"]:
        records = read_stages(compared / row["entry"])
        assert row["seed_cam_miou"] == records["pseudo"]["seed_cam_miou"]
        assert row["pseudo_crf_miou"] == records["pseudo"].get("pseudo_crf_miou")
        assert row["cls_map"] == pytest.approx(100 * records["train_cls"]["metrics"]["val/mAP"])
        assert row["trainable_params"] == records["train_cls"]["trainable_params"] / 1e6
        assert row["peak_rss_mib"] > 100
        assert row["seg_miou"] is None  # train-seg was not among --stages
    plain, variant = board["rows"]
    assert read_stages(compared / "nocrf")["pseudo"]["bg_threshold"] == 0.4
    assert isinstance(plain["pseudo_crf_miou"], float) and variant["pseudo_crf_miou"] is None
    assert not (compared / "nocrf" / "pseudo_crf").exists()
    for name in ("leaderboard.md", "leaderboard.csv", "leaderboard.png", "index.html"):
        assert (compared / name).is_file(), name
    page = (compared / "index.html").read_text()
    assert "CAM overlays across entries" in page and page.count("overlays/") >= 1
    resolved = yaml.safe_load((compared / "nocrf" / "config.yaml").read_text())
    assert resolved["pseudo"]["crf"] is False and resolved["out"] == str(compared / "nocrf")


def test_stages_the_variants_share_are_computed_once(compared):
    variant = compared / "nocrf"
    for rel in ("classifier", "cams"):
        assert (variant / rel).is_symlink()
        assert (variant / rel).resolve() == (compared / "tiny" / rel).resolve()
    records = read_stages(variant)
    assert records["train_cls"]["shared_from"] == records["cams"]["shared_from"] == "tiny"
    assert "shared_from" not in records["pseudo"] and not (variant / "pseudo").is_symlink()
    assert records["cams"]["fingerprint"] == read_stages(compared / "tiny")["cams"]["fingerprint"]
    board = json.loads((compared / "leaderboard.json").read_text())
    assert board["rows"][1]["shared"] == ["cams", "train_cls"]


def test_a_rerun_reruns_nothing(compared, capsys):
    before = {e: (compared / e / "stages.json").read_text() for e in ("tiny", "nocrf")}
    state = (compared / "compare.json").read_text()
    config = compared.parent / "tiny.yaml"
    assert main(["compare", str(config), "--variant", "nocrf:--pseudo.crf=false --pseudo.bg_threshold=0.4",
                 "--out", str(compared), "--stages", "train-cls,cams,pseudo"]) == 0
    assert (compared / "compare.json").read_text() == state
    assert {e: (compared / e / "stages.json").read_text() for e in before} == before
    assert "| tiny |" in capsys.readouterr().out


def test_unknown_field_in_a_variant_stops_with_its_name(tmp_path, capsys):
    config = tiny_config(tmp_path)
    code = main(["compare", str(config), "--variant", "x:--pseudo.crf_iters=3", "--out", str(tmp_path / "c")])
    assert code == 2
    err = capsys.readouterr().err
    assert "--variant x: unknown field 'pseudo.crf_iters'" in err and "pseudo.crf_n_iter" in err
    assert not (tmp_path / "c").exists()


def test_a_killed_compare_resumes_without_rerunning_finished_entries(tmp_path):
    config = tiny_config(tmp_path)
    out = tmp_path / "cmp"
    argv = [sys.executable, "-m", "wsss.cli", "compare", str(config), "--variant", "b:--classifier.max_steps=4",
            "--out", str(out), "--stages", "train-cls,cams"]
    proc = subprocess.Popen(argv, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = out / "compare.json"
    deadline = time.time() + 300
    while time.time() < deadline and not (state.is_file() and "tiny" in json.loads(state.read_text())):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    first = json.loads(state.read_text())
    assert first["tiny"]["status"] == "done" and "b" not in first
    tiny_stages = (out / "tiny" / "stages.json").read_text()
    assert main(argv[3:]) == 0
    after = json.loads(state.read_text())
    assert after["tiny"] == first["tiny"]
    assert (out / "tiny" / "stages.json").read_text() == tiny_stages
    assert after["b"]["status"] == "done"
    assert len(list((out / "b" / "cams").glob("*.npz"))) == 16


def test_the_best_value_of_each_column_is_marked():
    def entry(name, seed, seconds, rss):
        records = {"train_cls": {"metrics": {"val/mAP": 0.5}, "trainable_params": 1000, "seconds": seconds},
                   "pseudo": {"seed_cam_miou": seed, "seed_cam_threshold": 0.3, "pseudo_miou": seed,
                              "pseudo_crf_miou": seed + 1},
                   "train_seg_pseudo_crf": {"miou": seed + 2}}
        return {"name": name, "records": records, "masks": "pseudo_crf", "peak_rss_mib": rss}

    full = {"name": "full", "records": {"train_seg_gt": {"miou": 80.0}}, "masks": "gt", "peak_rss_mib": 900.0}
    rows = build_rows([entry("a", 40.0, 10.0, 500.0), entry("b", 50.0, 20.0, 400.0), full])
    best = best_entries(rows)
    assert best["seed_cam_miou"] == ["b"] and best["seg_miou"] == ["b"]
    assert best["train_cls_seconds"] == ["a"] and best["peak_rss_mib"] == ["b"]
    assert best["cls_map"] == ["a", "b"]  # ties are all marked
    assert "seed_cam_threshold" not in best
    assert rows[1]["wsss_over_full"] == pytest.approx(52.0 / 80.0)
    assert rows[2]["wsss_over_full"] is None
    table = markdown(rows, best).splitlines()
    assert len(table) == 5 and table[0].count("|") == len(COLUMNS) + 3
    b_row = table[3].split("|")
    seed_col = 1 + [c.key for c in COLUMNS].index("seed_cam_miou") + 1
    assert b_row[seed_col].strip() == "**50.00**"
    assert table[2].split("|")[seed_col].strip() == "40.00"


class _DemoRefiner(Refiner):
    name = "demo_only"
    families = ("cnn",)

    @classmethod
    def demo_entries(cls):
        return {"demo_only_cnn": {"family": "cnn", "overrides": {"classifier": {"refiners": [{"name": "demo_only"}]}}}}


def test_registering_a_refiner_adds_its_entries_to_the_preset(monkeypatch):
    monkeypatch.setitem(REFINERS, "demo_only", _DemoRefiner)
    entries = preset_entries("refiners")
    assert list(entries)[:2] == ["cnn", "vit"]
    assert entries["demo_only_cnn"]["classifier"]["refiners"] == [{"name": "demo_only"}]
    assert entries["toco_vit"]["classifier"]["backbone"] == "vit_custom"


@pytest.mark.parametrize("name", list(preset_entries("refiners")))
def test_preset_entries_are_spelled_out_in_configs_demo(name):
    """configs/demo/<entry>.yaml gives the same run as the preset entry (the output folder aside)."""
    overrides = preset_entries("refiners")[name]
    from_preset, _ = parse_run_config("pipeline", ["--config", yaml.safe_dump(overrides)] if overrides else [])
    from_file, _ = parse_run_config("pipeline", ["--config", str(ROOT / "configs" / "demo" / f"{name}.yaml")])
    from_file.out = from_preset.out
    assert from_file == from_preset


def test_a_cam_method_with_its_own_model_plans_no_classifier(tmp_path):
    from wsss.compare.runner import planned_fingerprints

    config = tiny_config(tmp_path)
    stages = ["train-cls", "cams", "pseudo"]
    plain, _ = parse_run_config("pipeline", ["--config", str(config)])
    from test_excel_pipeline import TINY_CLIP

    clip, _ = parse_run_config("pipeline", ["--config", str(config), "--cams.method=excel",
                                            "--clip.model_cfg", TINY_CLIP])
    assert list(planned_fingerprints(plain, stages)) == ["train_cls", "cams", "pseudo"]
    assert list(planned_fingerprints(clip, stages)) == ["cams", "pseudo"]


def test_entries_generating_different_synthetic_sets_into_one_root_stop(tmp_path, capsys):
    config = tiny_config(tmp_path)
    argv = ["compare", str(config), "--variant", "bigger:--data.kwargs='{n_train: 20, n_val: 8, image_size: 64}'",
            "--out", str(tmp_path / "cmp"), "--stages", "train-cls"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "tiny and bigger" in err and "data.root" in err
    assert not (tmp_path / "synthetic").exists()
