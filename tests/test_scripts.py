"""The shell scripts run as written with the shipped VOC/COCO configs, on small fixtures in the real
layouts (only sizes, steps, device and the missing ImageNet weight files are overridden)."""

import json
import os
import subprocess
import sys
from pathlib import Path

from wsss.data.synthetic import generate_synthetic

ROOT = Path(__file__).parents[1]
SMALL = [
    "--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.strategy", "auto",
    "--trainer.loggers", "[csv]", "--progress", "false", "--data.num_workers", "0",
    "--classifier.pretrained", "false", "--classifier.max_steps", "2", "--classifier.batch_size", "2",
    "--classifier.crop_size", "48", "--classifier.backbone", "resnet10t",
    "--segmenter.pretrained", "false", "--segmenter.max_steps", "2", "--segmenter.batch_size", "2",
    "--segmenter.crop_size", "48", "--segmenter.backbone", "resnet10t", "--pseudo.workers", "1",
]


def run_script(script, config, *args, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    proc = subprocess.run(["bash", str(ROOT / "scripts" / script), str(ROOT / config), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def test_voc_scripts_stage_by_stage(tmp_path):
    generate_synthetic(tmp_path / "voc", n_train=6, n_val=3, image_size=48)  # VOC layout, ids within VOC's 21
    args = ["--data.root", str(tmp_path / "voc"), "--out", str(tmp_path / "run"), *SMALL]
    run_script("train_cls.sh", "configs/voc/cam_resnet50.yaml", *args, cwd=tmp_path)
    run_script("make_pseudo.sh", "configs/voc/cam_resnet50.yaml", *args, cwd=tmp_path)
    run_script("train_seg.sh", "configs/voc/cam_resnet50.yaml", *args, cwd=tmp_path)
    out = run_script("eval.sh", "configs/voc/cam_resnet50.yaml", *args, "--pred_dir",
                     str(tmp_path / "run" / "pseudo_crf"), "--split", "train", cwd=tmp_path)
    assert "mIoU" in out.stdout
    metrics = json.loads((tmp_path / "run" / "eval" / "seg_pseudo_crf" / "metrics.json").read_text())
    assert len(metrics["class_names"]) == 21


def test_coco_run_all(tmp_path):
    from test_datasets import make_coco

    make_coco(tmp_path / "coco")
    (tmp_path / "coco" / "train2014").mkdir()
    for p in (tmp_path / "coco" / "val2014").iterdir():
        (tmp_path / "coco" / "train2014" / p.name.replace("val2014", "train2014")).write_bytes(p.read_bytes())
    ann = json.loads((tmp_path / "coco" / "annotations" / "instances_val2014.json").read_text())
    for image in ann["images"]:
        image["file_name"] = image["file_name"].replace("val2014", "train2014")
    (tmp_path / "coco" / "annotations" / "instances_train2014.json").write_text(json.dumps(ann))
    run_script("run_all.sh", "configs/coco/cam_resnet50.yaml", "--data.root", str(tmp_path / "coco"), "--out",
               str(tmp_path / "run"), *SMALL, "--classifier.crop_size", "16", "--segmenter.crop_size", "16",
               "--segmenter.eval_scales", "[1.0]", cwd=tmp_path)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["seg_miou"] is not None
