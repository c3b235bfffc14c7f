"""The whole pipeline on a tiny synthetic config: every stage, the summary, the report, resume."""

import json

import pytest

from wsss.cli import main

TINY = [
    "--data.kwargs", "{n_train: 24, n_val: 8, image_size: 64}",
    "--classifier.backbone", "resnet10t", "--classifier.pretrained", "false", "--classifier.max_steps", "4", "--classifier.batch_size", "8",
    "--classifier.crop_size", "64", "--classifier.warmup_steps", "1",
    "--segmenter.backbone", "resnet10t", "--segmenter.pretrained", "false", "--segmenter.max_steps", "4", "--segmenter.batch_size", "8",
    "--segmenter.crop_size", "64", "--segmenter.warmup_steps", "1",
    "--cams.overlay_methods", "[cam, gradcam]", "--pseudo.workers", "2",
    "--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.loggers", "[csv]", "--progress", "false",
]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    argv = ["pipeline", "--out", str(root / "out"), "--data.root", str(root / "synthetic"), *TINY]
    assert main(argv) == 0
    return root, argv


def test_summary_has_every_headline_number(run):
    root, _ = run
    summary = json.loads((root / "out" / "summary.json").read_text())
    for key in ("seed_cam_miou", "seed_cam_threshold", "pseudo_miou", "pseudo_crf_miou", "seg_miou",
                "fully_supervised_miou"):
        assert isinstance(summary[key], float), key
    for key in ("seed_cam_miou", "pseudo_miou", "pseudo_crf_miou", "seg_miou", "fully_supervised_miou"):
        assert 0.0 <= summary[key] <= 100.0
    assert set(summary["stage_seconds"]) >= {"train_cls", "cams", "pseudo", "train_seg_pseudo_crf", "train_seg_gt"}


def test_every_stage_wrote_its_files(run):
    root, _ = run
    out = root / "out"
    n_train = len((root / "synthetic").rglob("train.txt").__next__().read_text().split())
    assert len(list((out / "cams").glob("*.npz"))) == n_train
    assert len(list((out / "pseudo").glob("*.png"))) == n_train
    assert len(list((out / "pseudo_crf").glob("*.png"))) == n_train
    assert (out / "classifier" / "classifier.ckpt").is_file()
    assert (out / "segmenter_gt" / "segmenter.ckpt").is_file()
    assert not list(out.rglob(".tmp-*"))


def test_report_is_static_html_with_pictures(run):
    root, _ = run
    report = root / "out" / "report"
    page = (report / "index.html").read_text()
    assert "Summary" in page and "CAM overlays" in page and "Pseudo masks" in page
    srcs = [part.split("'")[0] for part in page.split("src='")[1:]]
    assert srcs, "report has no figures"
    for src in srcs:
        assert (report / src).is_file(), src
    assert any("curve" in s for s in srcs)


def test_second_run_skips_finished_stages_and_reproduces_the_numbers(run):
    root, argv = run
    before = json.loads((root / "out" / "summary.json").read_text())
    assert main(argv) == 0
    after = json.loads((root / "out" / "summary.json").read_text())
    for key in ("seed_cam_miou", "pseudo_miou", "pseudo_crf_miou", "seg_miou", "fully_supervised_miou"):
        assert after[key] == before[key], key
    stages = json.loads((root / "out" / "stages.json").read_text())
    assert stages["train_cls"]["last_run"] == stages["train_seg_gt"]["last_run"] == "skipped"


def test_a_fresh_run_with_the_same_seed_gives_the_same_numbers(run):
    root, argv = run
    fresh = [a if a != str(root / "out") else str(root / "fresh") for a in argv]
    assert main(fresh) == 0
    first = json.loads((root / "out" / "summary.json").read_text())
    second = json.loads((root / "fresh" / "summary.json").read_text())
    for key in ("seed_cam_miou", "seed_cam_threshold", "pseudo_miou", "pseudo_crf_miou", "seg_miou",
                "fully_supervised_miou"):
        assert second[key] == first[key], key


def test_eval_command_on_a_mask_folder_and_a_cam_folder(run, capsys):
    root, argv = run
    out = root / "out"
    base = ["--out", str(out), "--data.root", str(root / "synthetic"), "--data.kwargs",
            "{n_train: 24, n_val: 8, image_size: 64}", "--progress", "false"]
    assert main(["eval", "--pred_dir", str(out / "pseudo_crf"), "--split", "train", *base]) == 0
    metrics = json.loads((out / "eval" / "pseudo_crf" / "metrics.json").read_text())
    summary = json.loads((out / "summary.json").read_text())
    assert metrics["miou"] == summary["pseudo_crf_miou"]
    assert main(["eval", "--cam_dir", str(out / "cams"), "--eval_out", str(root / "sweep"), *base]) == 0
    assert "best background threshold" in capsys.readouterr().out
    assert (root / "sweep" / "threshold_curve.png").is_file()
    assert main(["eval", "--pred_dir", str(out / "pseudo_crf"), "--eval_out", str(root / "default"), *base]) == 0
    assert json.loads((root / "default" / "metrics.json").read_text())["split"] == "train"  # pseudo masks: CAM split
    assert main(["eval", "--pred_dir", str(out / "pseudo_crf"), "--split", "val", *base]) == 2  # none made for val
