"""`wsss predict`: masks of each image's own size equal to the segmenter's `eval` output, corrupt files
named and skipped, a killed run resumes to identical files, the Python API."""

import csv
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch
from PIL import Image

import wsss
from wsss.apply.images import list_images
from wsss.apply.predict import SegInference, load_segmenter, predict_folder
from wsss.cli import main
from wsss.config import PseudoConfig
from wsss.data.base import read_image
from wsss.data.folder import FolderDataset
from wsss.data.palette import read_mask
from wsss.data.transforms import normalise_image
from wsss.errors import StaleOutputsError
from wsss.models.segmenter import Segmenter
from wsss.train.seg_inference import evaluate_segmenter, predict_mask

CLASSES = ["background", "cat", "dog", "fish"]
SIZES = {"a.jpg": (48, 64), "b.bmp": (40, 56), "grey.png": (37, 50), "rgba.png": (33, 71), "c.tif": (48, 64)}


def write_image(path, h, w, rng):
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.stack([(xx * 255 // w), (yy * 255 // h), rng.integers(0, 255, (h, w))], -1).astype(np.uint8)
    if path.name.startswith("grey"):
        Image.fromarray(rgb[..., 0]).save(path)
    elif path.name.startswith("rgba"):
        Image.fromarray(np.dstack([rgb, rng.integers(0, 255, (h, w), dtype=np.uint8)])).save(path)
    else:
        Image.fromarray(rgb).save(path)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    torch.manual_seed(0)
    model = Segmenter("resnet10t", len(CLASSES), head="largefov", head_kwargs={"channels": 16, "dropout": 0.0})
    with torch.no_grad():  # a random head of normal scale predicts background everywhere; spread the logits
        for p in model.head.parameters():
            p.mul_(30.0)
    ckpt = root / "segmenter.ckpt"
    torch.save({"hyper_parameters": {"model_config": model.config, "class_names": CLASSES},
                "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}, ckpt)
    data = root / "data"
    images = data / "images"
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, (h, w) in SIZES.items():
        write_image(images / name, h, w, rng)
    (images / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    # the same images as a folder dataset, so that `evaluate_segmenter` (the eval path) can run on them
    (data / "masks").mkdir()
    ids = [n.split(".")[0] for n in SIZES if not n.endswith(".tif")]
    for name, (h, w) in SIZES.items():
        Image.fromarray(np.zeros((h, w), np.uint8)).save(data / "masks" / f"{name.split('.')[0]}.png")
    (data / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    (data / "labels.csv").write_text("image,labels\n" + "".join(f"{i},cat\n" for i in ids))
    (data / "splits").mkdir()
    (data / "splits" / "val.txt").write_text("\n".join(ids) + "\n")
    return root, ckpt, images, FolderDataset(data, "val")


CRF = PseudoConfig(crf_n_iter=3).crf_params()
INFERENCE = ["--segmenter.eval_scales", "[1.0, 0.75]", "--segmenter.eval_flip", "true", "--segmenter.eval_crf",
             "true", "--pseudo.crf_n_iter", "3", "--progress", "false"]


def test_masks_have_each_images_size_and_equal_the_eval_output(setup, tmp_path, caplog):
    root, ckpt, images, dataset = setup
    out = tmp_path / "pred"
    with caplog.at_level("INFO", logger="wsss"):
        assert main(["predict", "--images", str(images), "--ckpt", str(ckpt), "--pred_out", str(out),
                     "--out", str(tmp_path / "run"), *INFERENCE]) == 0
    model, _ = load_segmenter(ckpt)
    evaluate_segmenter(model, dataset, scales=(1.0, 0.75), flip=True, crf=True, crf_params=CRF,
                       out_dir=tmp_path / "eval", progress=False)
    seen = set()
    for name, (h, w) in SIZES.items():
        image_id = name.split(".")[0]
        mask = read_mask(out / f"{image_id}.png")
        assert mask.shape == (h, w), name
        with Image.open(out / f"{image_id}_overlay.jpg") as overlay:
            assert overlay.size == (w, h)
        if name.endswith(".tif"):  # not a folder-dataset suffix: the eval path's own function instead
            raw = read_image(images / name)
            with torch.no_grad():
                expected = predict_mask(model, normalise_image(raw, model.mean, model.std)[None], raw, (1.0, 0.75),
                                        True, crf=True, crf_params=CRF)
        else:
            expected = read_mask(tmp_path / "eval" / f"{image_id}.png")
        np.testing.assert_array_equal(mask, expected, err_msg=name)
        seen |= set(np.unique(mask).tolist())
    assert len(seen) >= 2, "the test model should predict more than one class"
    assert "greyscale (L) converted to RGB: " + str(images / "grey.png") in caplog.text
    assert "RGBA: alpha channel dropped: " + str(images / "rgba.png") in caplog.text
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert [r["id"] for r in rows] == ["a", "b", "c", "grey", "rgba"]
    for row in rows:
        mask = read_mask(out / f"{row['id']}.png")
        shares = [float(row[f"share_{c}"]) for c in CLASSES]
        assert shares == pytest.approx([(mask == c).mean() for c in range(len(CLASSES))], abs=1e-6)
        assert [p.split(":")[0] for p in row["classes"].split(";") if p] == \
            sorted((CLASSES[c] for c in np.unique(mask) if c), key=lambda n: -(mask == CLASSES.index(n)).sum())


def test_a_corrupt_file_is_named_skipped_and_listed_at_the_end(setup, tmp_path, caplog):
    _, ckpt, images, _ = setup
    model, names = load_segmenter(ckpt)
    with caplog.at_level("INFO", logger="wsss"):
        result = predict_folder(model, names, list_images(images), tmp_path / "p", SegInference(), progress=False)
    bad = images / "broken.jpg"
    assert [p for p, _ in result["skipped"]] == [bad] and result["written"] == len(SIZES)
    summary = caplog.records[-2].getMessage()
    assert "skipped 1 unreadable file(s)" in summary and f"{bad}: cannot read image" in summary
    assert (tmp_path / "p" / "skipped.txt").read_text().startswith(f"{bad}\t")
    assert not (tmp_path / "p" / "broken.png").exists()
    with pytest.raises(StaleOutputsError, match="another checkpoint or other settings"):
        predict_folder(model, names, list_images(images), tmp_path / "p", SegInference(flip=True), progress=False)


def test_the_python_api_returns_the_masks_of_files_and_arrays(setup, tmp_path):
    _, ckpt, images, _ = setup
    masks = wsss.predict(str(images / "*.png"), ckpt)
    assert list(masks) == ["grey", "rgba"]
    rgb = read_image(images / "a.jpg")
    model, _ = load_segmenter(ckpt)
    with torch.no_grad():
        expected = predict_mask(model, normalise_image(rgb, model.mean, model.std)[None])
    both = wsss.predict([rgb, str(images / "grey.png")], ckpt)
    assert list(both) == ["0", "grey"]
    np.testing.assert_array_equal(both["0"], expected)
    np.testing.assert_array_equal(both["grey"], masks["grey"])


def test_a_killed_run_resumes_to_identical_files(setup, tmp_path):
    _, ckpt, _, _ = setup
    folder = tmp_path / "many"
    folder.mkdir()
    rng = np.random.default_rng(1)
    n = 6
    for i in range(n):
        write_image(folder / f"im{i:02d}.png", 40 + 8 * (i % 3), 56, rng)
    args = ["predict", "--images", str(folder), "--ckpt", str(ckpt), "--out", str(tmp_path / "run"),
            "--segmenter.eval_crf", "true", "--pseudo.crf_n_iter", "150", "--progress", "false", "--batch_size", "2"]
    target = tmp_path / "killed"
    script = f"import sys; from wsss.cli import main; sys.exit(main({[*args, '--pred_out', str(target)]!r}))"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)], env=env)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(target.glob("*_overlay.jpg"))) < 2:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(list(target.glob("im??.png")))
    assert 0 < done < n, "the run should have been killed part-way"
    assert main([*args, "--pred_out", str(target)]) == 0
    assert not list(target.glob(".tmp-*"))
    assert main([*args, "--pred_out", str(tmp_path / "fresh")]) == 0
    fresh = sorted(p.name for p in (tmp_path / "fresh").iterdir())
    assert fresh == sorted(p.name for p in target.iterdir())
    assert len(fresh) == 2 * n + 2  # masks, overlays, predictions.csv, predict.json
    for name in fresh:
        assert (target / name).read_bytes() == (tmp_path / "fresh" / name).read_bytes(), name
