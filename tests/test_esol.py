"""ESOL maths: the deformable sampler, the inverse supervision of the expansion offsets, the feature
clip, the expanded mask, the area loss and the stage schedule."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import deform_conv2d

from wsss.errors import ConfigError
from wsss.models.classifier import Classifier
from wsss.refiners import build_refiner
from wsss.refiners.esol import DeformableSampler, ESOLRefiner, area_loss, expanded_mask, scale_gradient
from wsss.refiners.esol.losses import max_normalise
from wsss.refiners.esol.samplers import bound_offsets, clip_features
from wsss.refiners.esol.schedule import esol_stages


def test_with_zero_offsets_the_deformable_convolution_is_a_plain_convolution():
    """Within 1e-6 in float64; float32 differs by its summation order only (1e-6 of the output scale)."""
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(2, 16, 9, 7, generator=g), torch.randn(16, 16, 3, 3, generator=g)
    zero = torch.zeros(2, 18, 9, 7)
    for dtype in (torch.float64, torch.float32):
        x, w, zero = x.to(dtype), w.to(dtype), zero.to(dtype)
        plain = F.conv2d(x, w, padding=1)
        scale = 1.0 if dtype == torch.float64 else float(plain.abs().max())
        torch.testing.assert_close(deform_conv2d(x, zero, w, padding=1), plain, rtol=0, atol=1e-6 * scale)


def test_a_sampler_with_zero_offsets_equals_the_same_block_with_a_plain_convolution():
    torch.manual_seed(0)
    sampler = DeformableSampler(8).eval().double()
    x = torch.randn(2, 8, 6, 6, dtype=torch.float64)
    torch.testing.assert_close(sampler(x), x, rtol=0, atol=0)  # zero-initialised: starts from the plain model
    with torch.no_grad():
        sampler.norm.weight.uniform_(0.5, 1.5)
        sampler.norm.running_mean.normal_()
    assert torch.count_nonzero(sampler.offsets(x)) == 0
    plain = clip_features(x + sampler.norm(F.conv2d(x, sampler.weight, padding=1)), x)
    torch.testing.assert_close(sampler(x), plain, rtol=0, atol=1e-6)
    assert not torch.allclose(plain, x)
    active = DeformableSampler(8, branch_scale_init=1.0).eval().double()  # fresh, branch on from the start
    reference = clip_features(x + active.norm(F.conv2d(x, active.weight, padding=1)), x)
    torch.testing.assert_close(active(x), reference, rtol=0, atol=1e-6)
    assert not torch.allclose(reference, x)


def test_offsets_are_bounded_and_the_clip_keeps_the_input_range():
    raw = torch.linspace(-50, 50, 101)
    bounded = bound_offsets(raw, 3.0)
    assert bounded.abs().max() <= 3.0 and bounded[50] == 0
    torch.testing.assert_close(bound_offsets(torch.tensor([1e-3]), 3.0), torch.tensor([1e-3]))
    ref = torch.rand(2, 4, 5, 5)
    clipped = clip_features(ref * 3 - 1, ref)
    assert (clipped <= ref.amax(dim=(2, 3), keepdim=True)).all() and (clipped >= ref.amin(dim=(2, 3), keepdim=True)).all()
    assert (clip_features(ref, ref) == ref).all()


def test_scale_gradient_is_identity_forward_and_scales_backward():
    x = torch.randn(5, requires_grad=True)
    y = scale_gradient(x, -0.5)
    assert torch.equal(y, x)
    (y * torch.arange(5.0)).sum().backward()
    torch.testing.assert_close(x.grad, -0.5 * torch.arange(5.0))


def _expansion_model(inverse_weight):
    torch.manual_seed(1)
    model = Classifier("resnet10t", 3)
    refiner = ESOLRefiner(inverse_weight=inverse_weight)
    refiner.configure_stages(10)
    refiner.attach(model)
    refiner.on_stage_start("expansion", model)
    sampler = refiner.samplers.expansion
    with torch.no_grad():  # a sampler some way into training: active branch, non-zero offsets
        sampler.norm.weight.fill_(1.0)
        sampler.offset.weight.normal_(0, 0.02)
    return model.train(), sampler


def _grads(model, loss):
    model.zero_grad()
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_expansion_offsets_get_the_reversed_gradient_and_the_rest_the_ordinary_one():
    model, sampler = _expansion_model(inverse_weight=0.7)
    x, y = torch.randn(4, 3, 64, 64), torch.tensor([[1.0, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]])
    refined = _grads(model, F.multilabel_soft_margin_loss(model(x), y))
    plain_logits = model.head(sampler(model.backbone(x).final, offset_gradient=1.0))  # no inverse signal
    plain = _grads(model, F.multilabel_soft_margin_loss(plain_logits, y))
    assert refined.keys() == plain.keys()
    offset_keys = {"feature_map.expansion.offset.weight", "feature_map.expansion.offset.bias"}
    assert offset_keys <= refined.keys()
    for key in refined:
        expected = -0.7 * plain[key] if key in offset_keys else plain[key]
        torch.testing.assert_close(refined[key], expected, rtol=1e-5, atol=1e-8, msg=key)
    assert plain["feature_map.expansion.offset.weight"].abs().sum() > 0
    assert plain["feature_map.expansion.weight"].abs().sum() > 0  # the kernel is trained, not detached


def test_a_descent_step_on_the_expansion_offsets_raises_the_classification_loss():
    model, sampler = _expansion_model(inverse_weight=1.0)
    x, y = torch.randn(4, 3, 64, 64), torch.tensor([[1.0, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]])
    model.eval()  # fixed BatchNorm statistics, so the two losses differ only by the offsets
    model.feature_map.train()
    sampler.norm.eval()
    before = F.multilabel_soft_margin_loss(model(x), y)
    model.zero_grad()
    before.backward()
    with torch.no_grad():
        for p in sampler.offset.parameters():
            p -= 0.5 * p.grad  # what SGD does with the stored gradient
        after = F.multilabel_soft_margin_loss(model(x), y)
    assert after > before


def test_area_loss_decreases_as_the_activation_shrinks_toward_the_object():
    obj = torch.zeros(1, 1, 12, 12)
    obj[..., 4:8, 4:8] = 1
    labels = torch.tensor([[1.0, 0.0]])
    losses = []
    for halo in (4, 3, 2, 1, 0):  # activation spilling ``halo`` cells around the object, then none
        spill = torch.zeros(1, 1, 12, 12)
        spill[..., 4 - halo:8 + halo, 4 - halo:8 + halo] = 0.6
        cams = torch.cat([torch.maximum(obj, spill), torch.rand(1, 1, 12, 12)], dim=1)
        losses.append(float(area_loss(cams, labels)))
    assert all(a > b for a, b in zip(losses, losses[1:]))
    assert losses[-1] == pytest.approx(16 / 144, abs=1e-4)
    cams = torch.cat([obj + 0.2, torch.zeros_like(obj)], dim=1).requires_grad_(True)
    area_loss(cams, labels).backward()
    assert cams.grad[0, 0, 0, 0] > 0 and cams.grad[0, 1].abs().sum() == 0  # background pushed down; absent class ignored


def test_area_loss_within_the_expanded_region_and_without_classes():
    cams = torch.zeros(1, 2, 6, 6)
    cams[0, 0, :3] = 1.0  # class 0 fills the top half
    cams[0, 1, 3:, 3:] = 1.0  # absent class elsewhere
    labels = torch.tensor([[1.0, 0.0]])
    region = expanded_mask(cams, labels, 0.3)
    assert region.shape == (1, 1, 6, 6) and region.sum() == 18 and region[0, 0, :3].all()
    assert float(area_loss(cams, labels, region)) == pytest.approx(1.0, abs=1e-4)
    assert float(area_loss(cams, labels)) == pytest.approx(0.5, abs=1e-4)
    empty = area_loss(cams.requires_grad_(True), torch.zeros(1, 2))
    assert float(empty.detach()) == 0.0
    empty.backward()
    assert max_normalise(torch.full((1, 1, 2, 2), -1.0)).abs().sum() == 0


def test_stages_follow_the_run_length():
    assert esol_stages(250, 0.5) == [("expansion", 0), ("shrinkage", 125)]
    assert esol_stages(250, 1.0) == [("expansion", 0)]
    assert esol_stages(3, 0.1) == [("expansion", 0), ("shrinkage", 1)]
    refiner = ESOLRefiner(expansion_fraction=0.3)
    refiner.configure_stages(100)
    assert refiner.stages == [("expansion", 0), ("shrinkage", 30)]
    assert refiner.stage_at(29) == "expansion" and refiner.stage_at(30) == "shrinkage"


@pytest.mark.parametrize("options, message", [
    ({"expansion_fraction": 0.0}, "expansion_fraction"), ({"inverse_weight": -1.0}, "inverse_weight"),
    ({"max_offset": 0.0}, "max_offset"), ({"kernel_size": 2}, "kernel_size"),
    ({"mask_threshold": 1.0}, "mask_threshold"), ({"area_region": "box"}, "area_region"),
])
def test_bad_options_are_refused(options, message):
    with pytest.raises(ConfigError, match=message):
        build_refiner("esol", **options)


def test_attach_refuses_a_final_map_another_refiner_already_wraps():
    model = Classifier("resnet10t", 3)
    model.feature_map = nn.Sequential()
    with pytest.raises(ConfigError, match="already wrapped"):
        ESOLRefiner().attach(model)
