"""USAGE-style maths (spec ``toco_usage_doei.md`` B.3): temperature pooling limits and order, the
family rule, the dropped-region mask, the student's view and the consistency loss."""

import pytest
import torch

from wsss.errors import ConfigError
from wsss.refiners.usage import (
    consistency_loss,
    family_temperature,
    generation_loss,
    normalise_maps,
    temperature_pool,
    top_activation_keep,
)
from wsss.refiners.usage.views import erase, map_back, scaled_size, student_view


def _cam(seed=0, shape=(2, 3, 5, 7), dtype=torch.float64):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype) * 4 - 1


@pytest.mark.parametrize("relative", [False, True])
def test_pooling_tends_to_max_and_mean_within_1e_5(relative):
    cam = _cam()
    flat = cam.flatten(2)
    assert torch.allclose(temperature_pool(cam, 1e-6, relative), flat.amax(-1), atol=1e-5, rtol=0)
    assert torch.allclose(temperature_pool(cam, 1e6, relative), flat.mean(-1), atol=1e-5, rtol=0)
    # the spec's points (tau 1e-4 / 1e4, tolerance 1e-3) in float32
    cam32 = cam.float()
    assert torch.allclose(temperature_pool(cam32, 1e-4, relative), cam32.flatten(2).amax(-1), atol=1e-3)
    assert torch.allclose(temperature_pool(cam32, 1e4, relative), cam32.flatten(2).mean(-1), atol=1e-3)


@pytest.mark.parametrize("relative", [False, True])
def test_constant_map_scores_its_value_at_every_temperature(relative):
    cam = torch.full((1, 2, 4, 4), 0.37, dtype=torch.float64)
    for tau in (1e-4, 0.1, 1.0, 10.0, 1e4):
        got = temperature_pool(cam, tau, relative)
        assert torch.allclose(got, torch.full((1, 2), 0.37, dtype=torch.float64))


@pytest.mark.parametrize("relative", [False, True])
def test_score_does_not_decrease_as_the_temperature_decreases(relative):
    cam = _cam(1)
    taus = [1e3, 100, 10, 3, 1, 0.3, 0.1, 0.03, 0.01]
    scores = torch.stack([temperature_pool(cam, t, relative) for t in taus])
    assert torch.all(scores[1:] >= scores[:-1] - 1e-12)
    assert torch.all(scores[-1] > scores[0])  # strictly, for a non-constant map


def test_generation_loss_is_soft_margin_of_pooled_scores_and_trains_the_cam():
    cam = _cam(2).float().requires_grad_(True)
    labels = torch.tensor([[1.0, 0, 1], [0, 1, 0]])
    loss = generation_loss(cam, labels, 0.5)
    want = torch.nn.functional.multilabel_soft_margin_loss(temperature_pool(cam, 0.5), labels)
    assert torch.allclose(loss, want)
    loss.backward()
    assert cam.grad.abs().sum() > 0


def test_low_temperature_puts_the_gradient_on_the_peak_high_temperature_spreads_it():
    cam = torch.zeros(1, 1, 3, 3)
    cam[0, 0, 1, 1] = 2.0
    grads = []
    for tau in (0.05, 100.0):
        x = cam.clone().requires_grad_(True)
        temperature_pool(x, tau).sum().backward()
        grads.append(x.grad.flatten())
    peaky, spread = grads
    assert peaky[4] > 0.99 and peaky.abs().sum() - peaky[4] < 1e-3
    assert torch.allclose(spread, torch.full((9,), 1 / 9), atol=0.02)


def test_relative_temperature_does_not_depend_on_the_scale_of_the_map():
    cam = _cam(7)
    for tau in (0.1, 1.0):
        assert torch.allclose(temperature_pool(50 * cam, tau, relative=True), 50 * temperature_pool(cam, tau, True))
    # on raw maps the same tau is near max pooling for large logits and near mean pooling for small ones
    big, small = temperature_pool(50 * cam, 1.0) / 50, temperature_pool(cam / 50, 1.0) * 50
    assert torch.allclose(big, cam.flatten(2).amax(-1), atol=0.05)
    assert torch.allclose(small, cam.flatten(2).mean(-1), atol=0.05)


def test_family_rule_gives_cnns_the_higher_temperature():
    assert family_temperature("cnn", 1.0, 0.1) == 1.0 > family_temperature("vit", 1.0, 0.1) == 0.1
    with pytest.raises(ConfigError):
        family_temperature("rnn", 1.0, 0.1)
    with pytest.raises(ConfigError):
        temperature_pool(_cam(), 0.0)


def test_dropping_removes_the_top_activated_region_of_present_classes_only():
    cam = torch.zeros(2, 2, 4, 4)
    cam[:, 0, 0, 0] = 5.0                  # class 0 peak
    cam[:, 0, 0, 1] = 4.0                  # 80% of it: also among the most activated at 0.7
    cam[:, 0, 3, 3] = 1.0                  # 20%: kept
    cam[:, 1, 2, 2] = 3.0                  # class 1 peak
    labels = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    keep = top_activation_keep(cam, labels, 0.7)
    assert keep.shape == (2, 1, 4, 4) and keep.dtype == torch.bool
    dropped0 = {tuple(i.tolist()) for i in (~keep[0, 0]).nonzero()}
    dropped1 = {tuple(i.tolist()) for i in (~keep[1, 0]).nonzero()}
    assert dropped0 == {(0, 0), (0, 1)}            # class 1 is absent in image 0
    assert dropped1 == {(0, 0), (0, 1), (2, 2)}
    # nothing positive or nothing present: nothing dropped
    assert top_activation_keep(-cam.abs(), labels, 0.7).all()
    assert top_activation_keep(cam, torch.zeros(2, 2), 0.7).all()


def test_erase_blanks_the_dropped_cells_at_input_resolution():
    images = torch.ones(1, 3, 8, 8)
    keep = torch.ones(1, 1, 4, 4, dtype=torch.bool)
    keep[0, 0, 0, 0] = False
    out = erase(images, keep)
    assert torch.all(out[..., :2, :2] == 0) and out.sum() == 3 * (64 - 4)


def test_student_view_maps_back_to_the_teacher_frame():
    images = torch.randn(2, 3, 16, 16)
    keep = torch.ones(2, 1, 4, 4, dtype=torch.bool)
    view = student_view(images, keep, flip=True, scale=1.0, stride=4)
    assert torch.equal(view, images.flip(-1))
    cam_like = torch.nn.functional.avg_pool2d(view, 4)        # a "CAM" of the flipped view
    back = map_back(cam_like, (4, 4), flip=True)
    assert torch.allclose(back, torch.nn.functional.avg_pool2d(images, 4))
    scaled = student_view(images, keep, flip=False, scale=1.5, stride=4)
    assert scaled.shape[-2:] == (24, 24) and map_back(torch.zeros(2, 3, 6, 6), (4, 4), False).shape[-2:] == (4, 4)
    assert scaled_size((16, 20), 0.1, 16) == (16, 16)


def test_consistency_is_zero_for_identical_views_and_positive_otherwise():
    teacher = _cam(3).float()
    labels = torch.tensor([[1.0, 0, 1], [0, 1, 0]])
    keep = torch.ones(2, 1, 5, 7, dtype=torch.bool)
    keep[:, :, 0, :3] = False
    assert consistency_loss(teacher.clone(), teacher, labels, keep) == 0
    # a positive multiple has the same spatial distribution
    assert consistency_loss(3 * teacher, teacher, labels, keep) < 1e-6
    other = _cam(4).float()
    assert consistency_loss(other, teacher, labels, keep) > 0.05
    # differences at dropped positions or in absent classes do not count
    moved = teacher.clone()
    moved[:, :, 0, :3] += 10.0
    moved[0, 1] = _cam(5)[0, 1].float()
    assert consistency_loss(moved, teacher, labels, keep) == 0


def test_consistency_gradient_reaches_the_student_only():
    teacher = _cam(3).float().requires_grad_(True)
    student = _cam(4).float().requires_grad_(True)
    labels = torch.tensor([[1.0, 1, 0], [0, 1, 1]])
    keep = torch.ones(2, 1, 5, 7, dtype=torch.bool)
    consistency_loss(student, teacher, labels, keep).backward()
    assert teacher.grad is None and student.grad.abs().sum() > 0
    none_present = consistency_loss(student, teacher.detach(), torch.zeros(2, 3), keep)
    assert none_present == 0 and none_present.requires_grad


def test_normalised_maps_lie_in_unit_interval_on_kept_positions():
    cam = _cam(6).float()
    keep = torch.rand(2, 1, 5, 7, generator=torch.Generator().manual_seed(0)) > 0.3
    maps = normalise_maps(cam, keep)
    assert maps.min() >= 0 and maps.max() < 1 and torch.all(maps[~keep.expand_as(maps)] == 0)
