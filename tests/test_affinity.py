"""Affinity refinement: PAR, IRN's relation labels, boundary loss and random walk (against the official
code), the ``train-aff`` stage (killed and resumed) and the random-walk masks downstream.

``tests/fixtures/irn_reference.npz`` holds inputs and outputs of jiwoon-ahn/irn's own functions at
commit a2ece0034d0a5a9635e4e131cd4fa6e2a779d316, made by a throwaway script run outside this project
from a ``git archive`` of that commit (``cd irn && PYTHONPATH=. python make_fixture.py out.npz``) with
``torch.Tensor.cuda`` patched to the identity (no GPU here) and, for the float64 run only,
``torch.sparse.FloatTensor`` (deprecated) replaced by ``torch.sparse_coo_tensor``, which keeps the dtype:

- ``rw_*``: ``misc.indexing.propagate_to_edge(cams, edge[None], radius=5, beta=10, exp_times=8)`` on
  2 random [11, 13] maps (numpy seed 0) and a boundary with a vertical ridge at column 6; ``rw_out``
  in float32 as the official code runs, ``rw_out_float64`` with float64 inputs;
- ``rel_*``: ``misc.indexing.PathIndex(radius=10, default_size=(24, 24))`` and
  ``voc12.dataloader.GetAffinityLabelFromIndices(src_indices, dst_indices)`` of a hand-drawn label
  map with classes 1 and 2, background and 255 regions; ``aff_*``:
  ``misc.indexing.edge_to_affinity(edge[None], path_indices)`` of a random [1, 24, 24] boundary;
- ``conf_*``: the confident-region steps of ``step/cam_to_ir_label.py`` (conf_fg_thres 0.30,
  conf_bg_thres 0.05, ``misc.imutils.crf_inference_label``) on two Gaussian CAMs over a two-rectangle
  32 x 40 image.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from wsss.affinity import PairGrid, confident_labels, par_cams, par_refine, random_walk
from wsss.affinity.losses import affinity_loss, reduce_labels
from wsss.affinity.network import AffinityNet
from wsss.affinity.propagate import RATIO_ARGMAX, background_score, foreground_ratio, propagate_cams
from wsss.cli import main
from wsss.config import AffinityConfig
from wsss.data.base import read_image
from wsss.data.palette import read_mask
from wsss.errors import ConfigError
from wsss.pseudo.storage import load_cams
from wsss.pseudo.thresholds import cams_to_mask
from wsss.stages.records import read_stages

FIXTURE = Path(__file__).parent / "fixtures" / "irn_reference.npz"


@pytest.fixture(scope="module")
def ref():
    with np.load(FIXTURE, allow_pickle=False) as data:
        return dict(data)


def _step_image(size=32, edge=16):
    rng = np.random.default_rng(0)
    image = np.full((size, size, 3), 30.0)
    image[:, edge:] = 220.0
    return np.clip(image + rng.normal(0, 3, image.shape), 0, 255).astype(np.uint8)


def test_par_leaves_a_constant_map_unchanged():
    image = np.random.default_rng(1).integers(0, 256, (24, 24, 3), dtype=np.uint8)
    cams = np.full((2, 24, 24), 0.4, np.float32)
    np.testing.assert_allclose(par_cams(image, cams), cams, atol=1e-5)
    # the official (ToCo/AFA) form scales every map by (1 + w_pos) per step: argmax and ratios unchanged
    raw = par_refine(torch.rand(1, 3, 8, 8), torch.ones(1, 1, 8, 8), num_iter=3, w_pos=0.01)
    torch.testing.assert_close(raw, torch.full_like(raw, 1.01 ** 3))


def test_par_sharpens_a_blurred_edge_toward_the_image_edge():
    image = _step_image()
    ramp = np.clip((24 - np.arange(32)) / 16.0, 0, 1).astype(np.float32)  # 1 up to column 8, 0 from 24
    cams = np.broadcast_to(ramp, (1, 32, 32)).copy()
    refined = par_cams(image, cams)
    step = (np.arange(32) < 16).astype(np.float32)
    assert np.abs(refined - step).mean() < 0.6 * np.abs(cams - step).mean()
    assert (refined[:, :, 12:16] > cams[:, :, 12:16]).all() and (refined[:, :, 16:20] < cams[:, :, 16:20]).all()
    # thresholded at 0.5 the blurred map crosses at column 16 too, but its ramp is what PAR removes
    assert refined[:, :, :14].min() > 0.8 and refined[:, :, 18:].max() < 0.2


def test_random_walk_equals_the_official_code(ref):
    cams, edge = torch.from_numpy(ref["rw_cams"]), torch.from_numpy(ref["rw_edge"])
    ours = random_walk(cams.double(), edge.double()).numpy()
    np.testing.assert_allclose(ours, ref["rw_out_float64"], atol=1e-5, rtol=0)
    # the official float32 run squares a dense matrix 8 times; its rounding is about 2e-5 here
    np.testing.assert_allclose(random_walk(cams, edge).numpy(), ref["rw_out"], atol=5e-5, rtol=0)
    # the ridge at column 6 separates the two sides: values differ across it, not along a side
    out = ref["rw_out_float64"]
    assert np.ptp(out[:, :, 8:], axis=(1, 2)).max() < 0.05 < np.abs(out[:, :, 2] - out[:, :, 10]).max()


class _FixedBoundary:
    """Stands in for a trained AffinityNet: the same boundary map for every image."""

    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)

    def __init__(self, boundary):
        self.map = boundary

    def boundary(self, image):
        return self.map


def test_the_walked_background_ratio_is_psas_argmax_at_one_half_and_scales_the_background_elsewhere():
    walked = torch.rand(4, 9, 11, generator=torch.Generator().manual_seed(0))  # background, then 3 classes
    class_ids = np.array([2, 5, 7])
    ratio = foreground_ratio(walked).numpy()
    psa = np.concatenate([[0], class_ids])[walked.numpy().argmax(0)]
    np.testing.assert_array_equal(cams_to_mask(ratio, class_ids, bg_threshold=RATIO_ARGMAX), psa)
    scaled = walked.clone()
    scaled[0] *= 0.3 / 0.7
    np.testing.assert_array_equal(cams_to_mask(ratio, class_ids, bg_threshold=0.3),
                                  np.concatenate([[0], class_ids])[scaled.numpy().argmax(0)])
    cams = torch.tensor([[[0.2, 1.0]], [[0.5, 0.0]]])
    torch.testing.assert_close(background_score(cams, 2.0), torch.tensor([[[0.25, 0.0]]]))


def test_a_walked_background_stops_at_a_boundary_and_crosses_where_there_is_none():
    image = np.zeros((64, 64, 3), np.uint8)
    cams = np.zeros((1, 64, 64), np.float32)
    cams[:, :, :32] = 1.0  # the class fills the left half, the background score the right half
    wall = torch.zeros(16, 16)
    wall[:, 8] = 1.0
    walled = propagate_cams(_FixedBoundary(wall), image, cams, exp_times=4, background="walk", bg_power=1.0)
    open_ = propagate_cams(_FixedBoundary(torch.zeros(16, 16)), image, cams, exp_times=4, background="walk",
                           bg_power=1.0)
    assert walled.shape == (1, 64, 64)
    assert walled[0, :, :28].min() > 0.99 and walled[0, :, 36:].max() < 1e-6
    assert open_[0, :, 36:44].min() > 0.01 and open_[0, :, 20:28].max() < 0.99
    mask = cams_to_mask(walled, np.array([3]), bg_threshold=RATIO_ARGMAX)
    assert (mask[:, :28] == 3).all() and (mask[:, 36:] == 0).all()
    irn = propagate_cams(_FixedBoundary(wall), image, cams, exp_times=4)
    assert irn.max() == pytest.approx(1.0) and not np.allclose(irn, walled)
    with pytest.raises(ValueError, match="background must be one of"):
        propagate_cams(_FixedBoundary(wall), image, cams, background="psa")


def test_a_cam_power_above_one_gives_weak_activations_to_the_walked_background_and_keeps_the_core():
    image = np.zeros((64, 64, 3), np.uint8)
    cams = np.zeros((1, 64, 64), np.float32)
    cams[:, :, :16] = 1.0
    cams[:, :, 16:48] = 0.58  # above the background score 1 - 0.58 before the power, below it after
    model = _FixedBoundary(torch.zeros(16, 16))
    walk = dict(exp_times=1, background="walk", bg_power=1.0)
    plain = propagate_cams(model, image, cams, **walk)[0] > RATIO_ARGMAX
    sharp = propagate_cams(model, image, cams, cam_power=2.0, **walk)[0] > RATIO_ARGMAX
    assert plain[:, :12].all() and sharp[:, :12].all()
    assert not (sharp & ~plain).any() and sharp.sum() < 0.9 * plain.sum()
    with pytest.raises(ConfigError, match="rw_cam_power must be > 0"):
        AffinityConfig(rw_cam_power=0.0)


def test_par_on_the_walked_background_refines_it_with_the_classes():
    image = _step_image(64, 32)
    cams = np.zeros((1, 64, 64), np.float32)
    cams[:, :, :32] = 1.0
    model = _FixedBoundary(torch.zeros(16, 16))
    plain = propagate_cams(model, image, cams, exp_times=1, background="walk", bg_power=1.0)  # a soft edge
    refined = propagate_cams(model, image, cams, exp_times=1, background="walk", bg_power=1.0, par=True)
    step = (np.arange(64) < 32).astype(np.float32)
    assert np.abs(refined - step).mean() < 0.8 * np.abs(plain - step).mean()


def test_pairs_relation_labels_and_training_affinities_equal_the_official_code(ref):
    grid = PairGrid(10, 24, 24)
    directions = [tuple(d) for d in ref["rel_search_dst"]]
    assert sorted(directions) == sorted(grid.directions)
    order = [grid.directions.index(d) for d in directions]
    labels = torch.from_numpy(ref["rel_label"].astype(np.int64))[None]
    for name, ours in zip(("bg_pos", "fg_pos", "neg"), grid.relation_labels(labels)):
        np.testing.assert_array_equal(ours[0, order].numpy(), ref[f"rel_{name}"])
    aff = grid.affinities(torch.from_numpy(ref["aff_edge"]))
    np.testing.assert_allclose(aff[0, order].numpy(), ref["aff_out"][0], atol=1e-6)


def test_confident_labels_with_the_crf_equal_the_official_code(ref):
    ours = confident_labels(ref["conf_image"], ref["conf_cams"], ref["conf_class_ids"])
    np.testing.assert_array_equal(ours, ref["conf_out"])


def test_an_image_without_positive_classes_is_confident_background_with_the_crf():
    image = np.random.default_rng(0).integers(0, 255, (8, 12, 3), dtype=np.uint8)
    labels = confident_labels(image, np.zeros((0, 8, 12), np.float32), np.zeros(0, np.int64))
    np.testing.assert_array_equal(labels, np.zeros((8, 12), np.uint8))


def test_relation_labels_of_a_hand_made_cam_follow_irns_definition():
    cams = np.zeros((2, 8, 12), np.float32)
    cams[0, 1:4, 1:5] = 0.9   # confident class 3
    cams[0, 4, 1:5] = 0.2     # between the thresholds: unknown
    cams[1, 5:8, 7:11] = 0.6  # confident class 5
    labels = confident_labels(np.zeros((8, 12, 3), np.uint8), cams, np.array([3, 5]), 0.3, 0.05, crf=False)
    expected = np.zeros((8, 12), np.uint8)
    expected[1:4, 1:5], expected[4, 1:5], expected[5:8, 7:11] = 3, 255, 5
    np.testing.assert_array_equal(labels, expected)

    grid = PairGrid(3, 8, 12)  # sources: rows 0..5, columns 2..9; pairs up to distance < 3
    bg_pos, fg_pos, neg = (t[0] for t in grid.relation_labels(torch.from_numpy(labels.astype(np.int64))[None]))

    def pair(src, offset):
        (y, x), d = src, grid.directions.index(offset)
        return int(bg_pos[d, y * 8 + x - 2]), int(fg_pos[d, y * 8 + x - 2]), int(neg[d, y * 8 + x - 2])

    assert pair((1, 2), (0, 1)) == (0, 1, 0)   # inside class 3
    assert pair((2, 3), (1, 2)) == (0, 0, 1)   # class 3 -> background at (3, 5)
    assert pair((0, 2), (0, 2)) == (1, 0, 0)   # background row
    assert pair((3, 2), (1, 0)) == (0, 0, 0)   # into the unknown row
    assert pair((5, 6), (0, 1)) == (0, 0, 1)   # background -> class 5
    assert pair((5, 7), (1, 1)) == (0, 1, 0)   # inside class 5


def test_the_loss_falls_where_the_boundary_separates_the_relations():
    labels = torch.zeros(1, 20, 20, dtype=torch.long)
    labels[:, :, 10:] = 1
    on_edge = torch.full((1, 20, 20), 0.02)
    on_edge[:, :, 9:11] = 0.98
    flat = torch.full((1, 20, 20), 0.02)
    good, bad = affinity_loss(on_edge, labels, radius=5), affinity_loss(flat, labels, radius=5)
    assert good["neg"] < 0.1 < bad["neg"] and good["total"] < bad["total"]
    assert torch.equal(reduce_labels(torch.arange(64).view(1, 8, 8), (2, 2)), torch.tensor([[[18, 22], [50, 54]]]))


def test_the_boundary_network_trains_only_its_head_and_is_symmetric_under_flip():
    net = AffinityNet("resnet10t").train()
    assert not net.backbone.training and all(not p.requires_grad for p in net.backbone.parameters())
    x = torch.randn(1, 3, 37, 50)
    assert net(x).shape == (1, 1, 10, 13)
    b = net.eval().boundary(x)
    torch.testing.assert_close(b, net.boundary(x.flip(-1)).flip(-1))


TINY = ["--data.kwargs", "{n_train: 12, n_val: 4, image_size: 48}", "--classifier.backbone", "resnet10t",
        "--classifier.pretrained", "false", "--classifier.max_steps", "2", "--classifier.batch_size", "4",
        "--classifier.crop_size", "48", "--cams.scales", "[1.0]", "--pseudo.workers", "1",
        "--trainer.accelerator", "cpu", "--trainer.loggers", "[]", "--progress", "false",
        "--affinity.enabled", "true", "--affinity.backbone", "resnet10t", "--affinity.pretrained", "false",
        "--affinity.radius", "5", "--affinity.crop_size", "64", "--affinity.batch_size", "4",
        "--affinity.max_steps", "16", "--pseudo.par", "true", "--segmenter.backbone", "resnet10t",
        "--segmenter.pretrained", "false", "--segmenter.max_steps", "2", "--segmenter.batch_size", "2",
        "--segmenter.crop_size", "48", "--segmenter.fully_supervised", "false"]


class _FirstStep(pl.Callback):
    def on_train_start(self, trainer, pl_module):
        self.first = trainer.global_step


def test_a_killed_train_aff_resumes_and_its_masks_feed_the_segmenter(tmp_path, monkeypatch):
    base = ["--out", str(tmp_path / "out"), "--data.root", str(tmp_path / "synthetic"), *TINY]
    out = tmp_path / "out"
    for command in ("train-cls", "cams"):
        assert main([command, *base]) == 0
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1]), "WSSS_LOG_LEVEL": "WARNING"}
    proc = subprocess.Popen([sys.executable, "-m", "wsss.cli", "train-aff", *base], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    last = out / "affinity" / "last.ckpt"
    deadline = time.monotonic() + 120
    while not last.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert last.is_file() and not (out / "affinity" / "affinity.ckpt").exists(), "kill it part-way"
    assert read_stages(out)["train_aff"]["complete"] is False

    from wsss.stages import training

    first, real_make = _FirstStep(), training.make_trainer
    monkeypatch.setattr(training, "make_trainer", lambda *a, **k: (t := real_make(*a, **k), t.callbacks.append(first))[0])
    assert main(["train-aff", *base]) == 0
    assert 0 < first.first < 16
    assert torch.load(out / "affinity" / "affinity.ckpt", weights_only=True)["global_step"] == 16
    assert len(list((out / "ir_labels").glob("*.png"))) == 12

    assert main(["pseudo", *base]) == 0
    stages = read_stages(out)
    assert stages["train_aff"]["complete"] and stages["pseudo_rw"]["complete"]
    assert 0 <= stages["pseudo_rw"]["pseudo_rw_miou"] <= 100 and 0 <= stages["pseudo"]["pseudo_par_miou"] <= 100
    assert stages["pseudo_rw"]["made_from"]["inputs"]["train_aff"] == stages["train_aff"]["fingerprint"]
    masks = sorted((out / "pseudo_rw").glob("*.png"))
    assert len(masks) == 12 and read_mask(masks[0]).shape == (48, 48)
    assert main(["train-seg", *base, "--segmenter.masks", "pseudo_rw"]) == 0
    record = read_stages(out)["train_seg_pseudo_rw"]
    assert record["made_from"]["inputs"]["pseudo_rw"] == stages["pseudo_rw"]["fingerprint"]
    assert main(["pseudo", *base, "--affinity.beta", "5"]) == 2  # a changed walk setting is not mixed in
    walked_here = {f.name: load_cams(f) for f in sorted((out / "cams_rw").glob("*.npz"))}
    assert main(["pseudo", *base, "--pseudo.workers", "2", "--overwrite", "pseudo-rw"]) == 0
    assert sorted(p.name for p in (out / "cams_rw").glob("*.npz")) == sorted(walked_here)
    for name, (maps, class_ids) in walked_here.items():  # the pool's workers walk the same maps
        pooled, pooled_ids = load_cams(out / "cams_rw" / name)
        np.testing.assert_allclose(pooled, maps, atol=2e-3)
        np.testing.assert_array_equal(pooled_ids, class_ids)

    from wsss.stages import pseudo_rw

    def ramps(model, image, cams, **walk):  # the tiny boundary net walks every map flat; PAR needs an edge
        ramp = np.linspace(0.0, 1.0, image.shape[1], dtype=np.float32)
        return np.stack([np.broadcast_to(ramp ** (k + 1), image.shape[:2]) for k in range(len(cams))])

    monkeypatch.setattr(pseudo_rw, "propagate_cams", ramps)
    assert main(["pseudo", *base, "--affinity.rw_par", "true", "--overwrite", "pseudo-rw"]) == 0
    record = read_stages(out)["pseudo_rw"]
    assert record["made_from"]["fields"]["affinity.rw_par"] is True
    images = tmp_path / "synthetic" / "VOCdevkit" / "VOC2012" / "JPEGImages"
    moved = 0
    for mask_file in sorted((out / "pseudo_rw").glob("*.png")):
        walked, class_ids = load_cams(out / "cams_rw" / f"{mask_file.stem}.npz")
        refined = par_cams(read_image(images / f"{mask_file.stem}.jpg"), walked)
        expected = cams_to_mask(refined, class_ids, bg_threshold=record["pseudo_rw_threshold"])
        np.testing.assert_array_equal(read_mask(mask_file), expected)
        moved += int((expected != cams_to_mask(walked, class_ids, bg_threshold=record["pseudo_rw_threshold"])).any())
    assert moved > 0, "PAR changes some masks of the walked maps"

    walks = []

    def recorded(model, image, cams, **walk):
        walks.append(walk)
        return ramps(model, image, cams)

    monkeypatch.setattr(pseudo_rw, "propagate_cams", recorded)
    assert main(["pseudo", *base, "--affinity.rw_par", "true", "--affinity.rw_background", "walk",
                 "--affinity.rw_bg_power", "0.8", "--affinity.rw_cam_power", "2", "--overwrite", "pseudo-rw"]) == 0
    record = read_stages(out)["pseudo_rw"]
    assert record["made_from"]["fields"]["affinity.rw_background"] == "walk"
    assert len(walks) == 12
    assert {(w["background"], w["bg_power"], w["cam_power"], w["par"]) for w in walks} == {("walk", 0.8, 2.0, True)}
    for mask_file in sorted((out / "pseudo_rw").glob("*.png")):  # PAR ran in the walk, not again on the masks
        walked, class_ids = load_cams(out / "cams_rw" / f"{mask_file.stem}.npz")
        np.testing.assert_array_equal(read_mask(mask_file),
                                      cams_to_mask(walked, class_ids, bg_threshold=record["pseudo_rw_threshold"]))
