import numpy as np
import pytest

from wsss.data.palette import IGNORE_INDEX
from wsss.errors import DataError
from wsss.pseudo import cams_to_mask, cams_to_probs, crf_mask, dense_crf, load_cams, save_cams


def test_background_threshold_is_inclusive():
    cams = np.array([[[0.30, 0.2999, 0.9]], [[0.1, 0.1, 0.95]]], np.float32)
    mask = cams_to_mask(cams, np.array([3, 7]), bg_threshold=0.3)
    assert mask.tolist() == [[3, 0, 7]]


def test_high_low_band_boundaries():
    cams = np.array([[[0.7, 0.6999, 0.25, 0.2499, 0.0]]], np.float32)
    mask = cams_to_mask(cams, np.array([5]), high=0.7, low=0.25)
    assert mask.tolist() == [[5, IGNORE_INDEX, IGNORE_INDEX, 0, 0]]


def test_no_positive_class_gives_background_and_bad_arguments_raise():
    assert cams_to_mask(np.zeros((0, 2, 3)), np.zeros(0, int), bg_threshold=0.5).tolist() == [[0] * 3] * 2
    with pytest.raises(ValueError):
        cams_to_mask(np.zeros((1, 2, 2)), np.array([1]), high=0.7)


def _edge_case(size=48, blur=10):
    """Image with a vertical colour edge at x=24; a CAM whose boundary is blurred well past it."""
    image = np.zeros((size, size, 3), np.uint8)
    image[:, :24] = (200, 40, 40)
    image[:, 24:] = (30, 30, 200)
    truth = np.zeros((size, size), np.uint8)
    truth[:, :24] = 1
    x = np.arange(size)
    cam = 1.0 / (1.0 + np.exp((x - (24 + blur)) / 3.0))
    return image, truth, np.tile(cam, (size, 1))[None].astype(np.float32)


def iou(a, b):
    return ((a == 1) & (b == 1)).sum() / ((a == 1) | (b == 1)).sum()


def test_crf_moves_a_blurred_boundary_to_the_colour_edge():
    image, truth, cams = _edge_case()
    before = cams_to_mask(cams, np.array([1]), bg_threshold=0.5)
    after = crf_mask(image, cams, np.array([1]), bg_threshold=0.5)
    assert iou(after, truth) > iou(before, truth) + 0.1
    assert iou(after, truth) > 0.95


def test_crf_without_pairwise_terms_is_the_argmax_of_the_unary():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)
    probs = rng.random((4, 20, 30)).astype(np.float32)
    probs /= probs.sum(0, keepdims=True)
    out = dense_crf(image, probs, gauss_compat=0, bi_compat=0)
    np.testing.assert_array_equal(out.argmax(0), probs.argmax(0))
    cams = rng.random((2, 20, 30)).astype(np.float32)
    mask = crf_mask(image, cams, np.array([4, 9]), bg_threshold=0.4, gauss_compat=0, bi_compat=0)
    np.testing.assert_array_equal(mask, cams_to_mask(cams, np.array([4, 9]), bg_threshold=0.4))
    assert np.allclose(cams_to_probs(cams, 0.4).sum(0), 1.0)


def test_cam_files_round_trip_and_reject_nan(tmp_path):
    cams = np.random.default_rng(1).random((2, 5, 6)).astype(np.float32)
    save_cams(tmp_path / "a.npz", cams, np.array([2, 11]))
    loaded, ids = load_cams(tmp_path / "a.npz")
    assert ids.tolist() == [2, 11] and np.allclose(loaded, cams, atol=1e-3)
    with pytest.raises(ValueError, match="NaN"):
        save_cams(tmp_path / "b.npz", np.full((1, 2, 2), np.nan), np.array([1]))
    np.savez(tmp_path / "c.npz", cams=np.full((1, 2, 2), np.nan, np.float16), class_ids=np.array([1], np.int16))
    with pytest.raises(DataError, match=r"c\.npz.*NaN"):
        load_cams(tmp_path / "c.npz")


def test_power_background_score():
    from wsss.pseudo.thresholds import power_background_mask

    cams = np.array([[[0.5, 0.2, 0.9]]], np.float32)
    # (1 - 0.5)^1 = 0.5 ties -> class; (1 - 0.2)^1 = 0.8 > 0.2 -> bg; 0.1 < 0.9 -> class
    assert power_background_mask(cams, np.array([6]), bg_power=1.0).tolist() == [[6, 0, 6]]
    # a larger power shrinks the background score: 0.8^16 = 0.028 < 0.2 -> class
    assert power_background_mask(cams, np.array([6]), bg_power=16.0).tolist() == [[6, 6, 6]]


def test_crf_accepts_read_only_images():
    image, _, cams = _edge_case()
    image.setflags(write=False)
    assert crf_mask(image, cams, np.array([1]), bg_threshold=0.5).shape == image.shape[:2]
