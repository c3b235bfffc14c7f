"""The pseudo-mask labeler: output, bad input, and resume after a kill."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import cv2
import numpy as np
import pytest
from PIL import Image

from wsss.data.synthetic import SyntheticDataset
from wsss.errors import DataError
from wsss.eval.sweep import sweep_cam_thresholds
from wsss.pseudo import save_cams
from wsss.pseudo.labeler import make_pseudo_masks

N = 40


def blurred_cams(dataset, image_id):
    """CAMs from the ground truth, blurred and scaled: a stand-in for a classifier's."""
    gt = dataset.load_mask(image_id)
    ids = dataset.labels(image_id)
    cams = [cv2.GaussianBlur((gt == c).astype(np.float32), (0, 0), 3) * 0.9 for c in ids]
    return np.stack(cams) if cams else np.zeros((0, *gt.shape), np.float32), ids


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("lab")
    dataset = SyntheticDataset(root / "syn", "train", n_train=N, n_val=4, image_size=64)
    cam_dir = root / "cams"
    for image_id in dataset.ids:
        cams, ids = blurred_cams(dataset, image_id)
        save_cams(cam_dir / f"{image_id}.npz", cams, ids)
    return root, dataset, cam_dir


def test_masks_for_every_image_in_the_palette(setup):
    root, dataset, cam_dir = setup
    stats = make_pseudo_masks(cam_dir, dataset, root / "plain", bg_threshold=0.3, workers=2, progress=False)
    assert stats == {"written": N, "skipped": 0}
    for image_id in dataset.ids[:5]:
        with Image.open(root / "plain" / f"{image_id}.png") as img:
            assert img.mode == "P"
            assert set(np.unique(np.array(img))) <= {0, *dataset.labels(image_id).tolist()}
    again = make_pseudo_masks(cam_dir, dataset, root / "plain", bg_threshold=0.3, workers=2, progress=False)
    assert again == {"written": 0, "skipped": N}


def test_sweep_finds_the_best_threshold_in_one_pass(setup):
    root, dataset, cam_dir = setup
    best_t, best_miou, curve, _, _ = sweep_cam_thresholds(cam_dir, dataset, thresholds=[0.1, 0.3, 0.45, 0.8],
                                                    out_dir=root / "sweep", workers=1, progress=False)
    assert best_t == pytest.approx(0.45)  # a gaussian blur crosses half its peak (0.9 / 2) at the edge
    assert best_miou == max(m for _, m in curve)
    assert (root / "sweep" / "threshold_curve.png").is_file()


def test_bad_inputs_fail_before_writing(setup, tmp_path):
    root, dataset, cam_dir = setup
    stray = tmp_path / "cams"
    stray.mkdir()
    for p in cam_dir.glob("*.npz"):
        (stray / p.name).write_bytes(p.read_bytes())
    (stray / "not_in_the_split.npz").write_bytes((cam_dir / f"{dataset.ids[0]}.npz").read_bytes())
    with pytest.raises(DataError, match="not_in_the_split"):
        make_pseudo_masks(stray, dataset, tmp_path / "out1", progress=False)
    (stray / "not_in_the_split.npz").unlink()
    (stray / f"{dataset.ids[3]}.npz").unlink()
    with pytest.raises(DataError, match=dataset.ids[3]):
        make_pseudo_masks(stray, dataset, tmp_path / "out2", progress=False)
    assert not (tmp_path / "out2").exists() or not list((tmp_path / "out2").glob("*.png"))
    save_cams(stray / f"{dataset.ids[3]}.npz", np.ones((1, 10, 10), np.float32), dataset.labels(dataset.ids[3])[:1])
    with pytest.raises(DataError, match="size"):
        make_pseudo_masks(stray, dataset, tmp_path / "out3", crf=True, workers=1, progress=False)
    assert not list((tmp_path / "out3").glob(".tmp-*"))
    locked = tmp_path / "locked"
    locked.write_text("a file, not a folder")
    with pytest.raises(DataError, match="not writable"):
        make_pseudo_masks(cam_dir, dataset, locked / "sub", progress=False)


def test_killed_run_resumes_to_identical_files(setup, tmp_path):
    root, dataset, cam_dir = setup
    target = tmp_path / "killed"
    script = textwrap.dedent(f"""
        from wsss.data.synthetic import SyntheticDataset
        from wsss.pseudo.labeler import make_pseudo_masks
        ds = SyntheticDataset({str(root / "syn")!r}, "train", n_train={N}, n_val=4, image_size=64)
        make_pseudo_masks({str(cam_dir)!r}, ds, {str(target)!r}, crf=True, workers=1, progress=False,
                          crf_params={{"n_iter": 400}})
    """)
    proc = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.time() + 60
    seen_partial_under_final_name = False
    while time.time() < deadline and len(list(target.glob("*.png"))) < 3:
        for png in target.glob("*.png"):
            try:
                with Image.open(png) as img:
                    img.load()
            except Exception:
                seen_partial_under_final_name = True
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(list(target.glob("*.png")))
    assert 0 < done < N, "the run should have been killed part-way"
    assert not seen_partial_under_final_name
    stats = make_pseudo_masks(cam_dir, dataset, target, crf=True, crf_params={"n_iter": 400}, workers=2,
                              progress=False)
    assert stats["skipped"] == done and stats["written"] == N - done
    assert not list(target.glob(".tmp-*"))
    fresh = tmp_path / "fresh"
    make_pseudo_masks(cam_dir, dataset, fresh, crf=True, crf_params={"n_iter": 400}, workers=2, progress=False)
    for png in fresh.glob("*.png"):
        assert (target / png.name).read_bytes() == png.read_bytes(), png.name
