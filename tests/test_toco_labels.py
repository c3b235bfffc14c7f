"""ToCo labels: cam_to_label boundaries (A.10 item 17), box handling (Q9), pair mask, multi-scale CAM."""

import pytest
import torch

from wsss.refiners.toco.labels import (
    box_mask,
    cam_to_label,
    label_to_aff_mask,
    multi_scale_cam,
    normalise_cam,
    par_refine,
    refine_labels_with_background,
    roi_map,
    token_labels,
)


def _cam_with_values(values):
    """[1, 2, 1, N] CAM: class 1 (index 1) holds ``values``, class 0 is lower everywhere."""
    v = torch.tensor(values, dtype=torch.float64)
    return torch.stack([v * 0.1, v])[None, :, None, :]


@pytest.mark.parametrize("faithful", [True, False])
@pytest.mark.parametrize("bkg_thre", [0.0, 0.5, 0.99])
def test_cam_to_label_ignore_band_boundaries(faithful, bkg_thre):
    cam = _cam_with_values([0.70, 0.7001, 0.25, 0.2501, 0.0, 1.0])
    label = cam_to_label(cam, torch.tensor([[1.0, 1.0]]), high=0.70, low=0.25, ignore_mid=True,
                         bkg_thre=bkg_thre, faithful=faithful)
    assert label.tolist() == [[[255, 2, 0, 255, 0, 2]]]


def test_cam_to_label_masks_absent_classes_and_uses_bkg_without_ignore_mid():
    cam = torch.tensor([[[[0.9, 0.2]], [[0.3, 0.6]]]])  # [1, 2, 1, 2]
    only_second = torch.tensor([[0.0, 1.0]])
    assert cam_to_label(cam, only_second, 0.7, 0.25).tolist() == [[[255, 255]]]
    assert cam_to_label(cam, only_second, 0.7, 0.25, ignore_mid=False, bkg_thre=0.5).tolist() == [[[0, 2]]]
    assert cam_to_label(cam, torch.ones(1, 2), 0.7, 0.25, ignore_mid=False, bkg_thre=0.5).tolist() == [[[1, 2]]]


def test_box_faithful_applies_pixel_box_to_token_grid():
    # a 448 px input with a valid box starting at row 32 and col 0 (Q9)
    box = torch.tensor([[32, 448, 0, 400]])
    faithful = box_mask(box, (28, 28), (448, 448), faithful=True)
    corrected = box_mask(box, (28, 28), (448, 448), faithful=False)
    # faithful: start 32 >= 28 -> no valid token at all
    assert faithful.sum() == 0
    # corrected: rows 2..27, cols 0..24 (ceil(400 / 16) = 25)
    assert corrected[0, 2:, :25].all() and corrected.sum() == 26 * 25
    box0 = torch.tensor([[0, 200, 0, 200]])
    # faithful: start 0 and end 200 >= 28 -> padding tokens stay valid
    assert box_mask(box0, (28, 28), (448, 448), faithful=True).all()
    assert box_mask(box0, (28, 28), (448, 448), faithful=False).sum() == 13 * 13


@pytest.mark.parametrize("faithful", [True, False])
def test_token_labels_resizes_and_applies_box(faithful):
    cam = torch.zeros(1, 1, 64, 64)
    cam[..., :32, :] = 1.0  # top half confident foreground
    box = torch.tensor([[0, 64, 0, 32]])  # right half is padding
    labels = token_labels(cam, torch.ones(1, 1), (4, 4), 0.7, 0.25, valid_box=box, faithful=faithful)
    grid = labels.view(4, 4)
    assert grid[:2, :2].eq(1).all() and grid[2:, :2].eq(0).all()
    if faithful:  # box used in pixels: every token column < 32 -> nothing ignored
        assert (grid != 255).all()
    else:
        assert grid[:, 2:].eq(255).all()


def test_label_to_aff_mask():
    aff = label_to_aff_mask(torch.tensor([[0, 0, 1, 255]]))
    assert aff.tolist() == [[
        [255, 1, 0, 255],
        [1, 255, 0, 255],
        [0, 0, 255, 255],
        [255, 255, 255, 255],
    ]]


def test_normalise_cam_min_max():
    cam = torch.tensor([[[[2.0, 4.0], [6.0, 10.0]]]])
    out = normalise_cam(cam)
    assert out.flatten().tolist() == pytest.approx([0.0, 2 / 8.00001, 4 / 8.00001, 8 / 8.00001])


def test_multi_scale_cam_flip_max_and_scale_sum():
    calls = []

    def cam_fn(x):
        calls.append(tuple(x.shape))
        # class map = the red channel (flip-equivariant); aux = a column ramp fixed in position
        ramp = torch.linspace(0, 1, x.shape[-1]).expand_as(x[:, :1])
        return x[:, :1], ramp
    images = torch.zeros(2, 3, 8, 8)
    images[:, 0, :, :2] = 1.0
    cam, aux = multi_scale_cam(cam_fn, images, scales=(1.0, 0.5))
    assert calls == [(4, 3, 8, 8), (4, 3, 4, 4)]
    assert cam.shape == aux.shape == (2, 1, 8, 8)
    # a flip-equivariant map is flipped back onto itself: only the left border stays hot, and the
    # result is normalised to [0, 1)
    assert cam[0, 0, 4, 0] > 0.9 and cam[0, 0, 4, 7] == 0.0 and cam[0, 0, 4, 4] == 0.0
    assert cam.min() == 0.0 and cam.max() < 1.0
    # a map fixed in position is mirrored by the flip-back, so the max is symmetric with a cold centre
    assert torch.allclose(aux, aux.flip(-1), atol=1e-6)
    assert aux[0, 0, 0, 0] > 0.9 and aux[0, 0, 0, 3] < 0.3


def test_multi_scale_cam_runs_without_gradient():
    weight = torch.ones(1, 3, 1, 1, requires_grad=True)

    def cam_fn(x):
        m = torch.nn.functional.conv2d(x, weight)
        return m, m
    cam, _ = multi_scale_cam(cam_fn, torch.rand(1, 3, 8, 8))
    assert not cam.requires_grad


def test_roi_map_values():
    cam = torch.tensor([[[[0.25, 0.26, 0.69, 0.70]]]])
    assert roi_map(cam, torch.ones(1, 1), 0.70, 0.25).tolist() == [[[0, 1, 1, 2]]]


def _step_image():
    torch.manual_seed(0)
    img = torch.zeros(1, 3, 32, 32)
    img[..., 16:] = 1.0
    return img + 0.02 * torch.randn_like(img)


def test_par_weights_sum_to_one_plus_position_weight():
    # the colour and position softmaxes each sum to 1, so a constant map grows by (1 + w_pos) per step
    out = par_refine(torch.rand(1, 3, 8, 8), torch.ones(1, 1, 8, 8), num_iter=3, w_pos=0.01)
    assert torch.allclose(out, torch.full_like(out, 1.01 ** 3), atol=1e-5)


def test_par_pulls_labels_back_to_the_image_edge():
    cam = torch.zeros(1, 2, 32, 32)
    cam[0, 0, :, 12:] = 0.9  # class 1 spills 4 px over the dark/bright edge at column 16
    cls = torch.tensor([[1.0, 0.0]])
    plain = refine_labels_with_background(_step_image(), cam, cls, 0.7, 0.25, par=False)
    refined = refine_labels_with_background(_step_image(), cam, cls, 0.7, 0.25, par=True)
    assert torch.equal(plain, cam_to_label(cam, cls, 0.7, 0.25))
    assert (plain[0, :, 12:16] == 1).all()
    assert (refined[0, :, 12:16] != 1).all() and (refined[0, :, :12] == 0).all()
    assert (refined[0, 4:28, 18:28] == 1).all()


def test_refined_labels_respect_box_and_absent_classes():
    cam = torch.zeros(1, 2, 32, 32)
    cam[0, 1, :, 16:] = 0.9  # only an absent class is hot
    labels = refine_labels_with_background(_step_image(), cam, torch.tensor([[1.0, 0.0]]), 0.7, 0.25,
                                           valid_box=torch.tensor([[0, 32, 0, 24]]))
    assert (labels[0, :, 24:] == 255).all() and (labels[0, :, :24] == 0).all()


def test_refined_labels_ignore_per_channel_normalisation():
    torch.manual_seed(1)
    img = torch.rand(1, 3, 32, 32)
    cam = torch.rand(1, 2, 32, 32)
    cls = torch.ones(1, 2)
    mean = torch.tensor([0.485, 0.456, 0.406])[None, :, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[None, :, None, None]
    raw = refine_labels_with_background(img * 255, cam, cls, 0.7, 0.25)
    normalised = refine_labels_with_background((img - mean) / std, cam, cls, 0.7, 0.25)
    assert torch.equal(raw, normalised) and (raw == 255).any() and (raw != 255).any()
