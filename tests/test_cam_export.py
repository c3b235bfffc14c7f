"""`wsss cams`: one file per image, resume, and DDP sharding (2 CPU processes, gloo)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from wsss.data.synthetic import SyntheticDataset
from wsss.models.classifier import Classifier
from wsss.pseudo import load_cams
from wsss.pseudo.cam_export import export_cams

SYN = {"n_train": 10, "n_val": 2, "image_size": 48}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    dataset = SyntheticDataset(root / "syn", "train", **SYN)
    torch.manual_seed(0)
    model = Classifier("resnet10t", dataset.num_classes - 1).eval()
    ckpt = root / "classifier.ckpt"
    torch.save({"hyper_parameters": {"model_config": model.config},
                "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}, ckpt)
    return root, dataset, model, ckpt


def test_files_hold_positive_classes_at_full_resolution_and_resume(setup):
    root, dataset, model, _ = setup
    out = root / "single"
    stats = export_cams(model, dataset, out, scales=(1.0, 0.5), accelerator="cpu", devices=1, progress=False)
    assert stats == {"written": 10, "skipped": 0}
    for image_id in dataset.ids:
        cams, ids = load_cams(out / f"{image_id}.npz")
        assert ids.tolist() == dataset.labels(image_id).tolist()
        assert cams.shape == (len(ids), 48, 48)
        assert cams.dtype == np.float32 and (cams >= 0).all() and (cams <= 1).all()
    (out / f"{dataset.ids[0]}.npz").unlink()
    assert export_cams(model, dataset, out, scales=(1.0, 0.5), accelerator="cpu", devices=1,
                       progress=False) == {"written": 1, "skipped": 9}


def wsss_cli(*args, cwd):
    exe = Path(sys.executable).with_name("wsss")
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "wsss.cli"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([*command, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_two_ddp_processes_write_exactly_what_one_process_writes(setup):
    root, dataset, _, ckpt = setup
    common = ["--data.root", str(root / "syn"), "--data.kwargs", str(SYN).replace("'", ""), "--ckpt", str(ckpt),
              "--cams.scales", "[1.0, 0.5]", "--trainer.accelerator", "cpu", "--progress", "false"]
    one = wsss_cli("cams", "--out", str(root / "one"), "--trainer.devices", "1", *common, cwd=root)
    assert one.returncode == 0, one.stderr[-2000:]
    two = wsss_cli("cams", "--out", str(root / "two"), "--trainer.devices", "2", "--trainer.strategy", "ddp",
                   *common, cwd=root)
    assert two.returncode == 0, two.stderr[-2000:]
    files_one = sorted(p.name for p in (root / "one" / "cams").glob("*.npz"))
    files_two = sorted(p.name for p in (root / "two" / "cams").glob("*.npz"))
    assert files_one == files_two and len(files_one) == 10
    for name in files_one:
        a, ia = load_cams(root / "one" / "cams" / name)
        b, ib = load_cams(root / "two" / "cams" / name)
        assert ia.tolist() == ib.tolist()
        np.testing.assert_array_equal(a, b)
    shutil.rmtree(root / "two")
