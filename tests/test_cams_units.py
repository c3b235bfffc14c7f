"""Known answers of the CAM weightings, the TAM filter, multi-scale fusion, attention CAM, layer fusion."""

import numpy as np
import pytest
import torch
from torch import nn

import wsss.refiners  # noqa: F401  (registers the CLIP CAM methods, as the stages do)
from wsss.cams import CAM_METHODS, compute_cams, layer_select_cams, multiscale_cams
from wsss.cams.attn_cam import attention_cam
from wsss.cams.eigencam import sign_corrected
from wsss.cams.gradcampp import gradcampp_alpha, gradcampp_weights
from wsss.cams.layer_select import fuse_layers
from wsss.cams.tam import rank_gaussian_filter


def test_gradcampp_tiny_case_of_the_spec():
    a = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]], dtype=torch.float64)
    g = torch.tensor([[[[0.1, -0.2], [0.0, 0.3]]]], dtype=torch.float64)
    alpha = gradcampp_alpha(g, a.sum(dim=(2, 3), keepdim=True))[0, 0]
    np.testing.assert_allclose(alpha.numpy(), [[0.333322, 4.0e4], [0.0, 0.199999]], rtol=1e-4)
    assert float(gradcampp_weights(a, g)) == pytest.approx(0.0933321, rel=1e-5)


def test_tam_filter_known_cases():
    const = torch.full((1, 5, 5), 0.7)
    assert torch.allclose(rank_gaussian_filter(const), const)
    assert rank_gaussian_filter(torch.full((1, 4, 4), -1.0)).abs().sum() == 0
    spike = torch.zeros(1, 5, 5)
    spike[0, 2, 2] = 9.0
    out = rank_gaussian_filter(spike)
    # one outlier in a 3x3 window: high coefficient of variation -> close to the window mean
    assert 0.5 < float(out[0, 2, 2]) < 9.0
    assert float(out[0, 0, 0]) == 0.0


class ToyCNN(nn.Module):
    """conv -> ReLU -> (target) -> GAP -> linear: CAM is exact at ``features``."""

    def __init__(self, classes=4):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, stride=2, padding=1),
                                  nn.ReLU())
        self.features = nn.Identity()
        self.fc = nn.Linear(16, classes)

    def forward(self, x):
        return self.fc(self.features(self.body(x)).mean((2, 3)))

    def get_classifier(self):
        return self.fc


def test_every_method_is_batched_over_slots_consistently():
    model = ToyCNN().eval()
    x = torch.randn(3, 3, 16, 16)
    targets = torch.tensor([[0, 2], [1, 3], [3, -1]])
    for name in CAM_METHODS:
        if name == "attn_cam" or name.startswith("mctformer"):  # need a ViT with attention
            continue
        if CAM_METHODS[name].build_model is not None:  # bring their own model (CLIP), not a classifier's
            continue
        joint = compute_cams(model, x, targets, "features", method=name, normalize=None)
        for k in range(2):
            single = compute_cams(model, x, targets[:, k:k + 1], "features", method=name, normalize=None)
            torch.testing.assert_close(joint[:, k:k + 1], single, rtol=1e-5, atol=1e-6)
        assert joint[2, 1].abs().sum() == 0, name
    chunked = compute_cams(model, x, targets, "features", method="gradcam", chunk_size=1)
    torch.testing.assert_close(chunked, compute_cams(model, x, targets, "features", method="gradcam"))


@pytest.mark.parametrize("method", ["cam", "gradcam"])
def test_a_cam_call_restores_each_module_mode_and_parameter_flag(method):
    # a training model with a frozen part kept in eval mode, as ESOL's expansion path is
    model = ToyCNN().train()
    frozen = model.body[0]
    frozen.eval().requires_grad_(False)
    seen = {}

    def record(module, _inputs, _output):
        seen["training"] = [m.training for m in model.modules()]
        seen["grad"] = torch.is_grad_enabled()

    handle = model.fc.register_forward_hook(record)
    compute_cams(model, torch.randn(2, 3, 16, 16), torch.tensor([[0], [1]]), "features", method=method)
    handle.remove()
    assert not any(seen["training"])
    assert seen["grad"] == CAM_METHODS[method].uses_gradients
    assert model.training and not frozen.training and model.body[2].training
    assert [p.requires_grad for p in model.parameters()] == [False, False, True, True, True, True]


def test_multiscale_presets_fuse_flips_differently():
    model = ToyCNN().eval()
    x = torch.randn(1, 3, 16, 16)
    t = torch.tensor([[1]])
    irn = multiscale_cams(model, x, t, "features", method="cam", scales=(1.0,), preset="irn")
    toco = multiscale_cams(model, x, t, "features", method="cam", scales=(1.0,), preset="toco")
    raw = compute_cams(model, torch.cat([x, x.flip(-1)]), torch.cat([t, t]), "features", method="cam",
                       normalize=None).clamp(min=0)
    up = torch.nn.functional.interpolate
    summed = up(raw[:1] + raw[1:].flip(-1), size=(16, 16), mode="bilinear", align_corners=False)
    maxed = up(torch.maximum(raw[:1], raw[1:].flip(-1)), size=(16, 16), mode="bilinear", align_corners=False)
    torch.testing.assert_close(irn, summed / (summed.amax() + 1e-5))
    torch.testing.assert_close(toco, (maxed - maxed.amin()) / ((maxed - maxed.amin()).amax() + 1e-5))
    assert float(irn.max()) <= 1.0


def test_flip_symmetric_model_gives_flip_equivariant_multiscale_cams():
    model = ToyCNN().eval()
    x = torch.randn(1, 3, 16, 16)
    a = multiscale_cams(model, x, torch.tensor([[2]]), "features", scales=(1.0, 0.5))
    b = multiscale_cams(model, x.flip(-1), torch.tensor([[2]]), "features", scales=(1.0, 0.5))
    torch.testing.assert_close(a.flip(-1), b, rtol=1e-4, atol=1e-5)


def test_attention_cam_known_answer():
    # 1 prefix token, 2x2 patches, one block, one head
    attn = torch.zeros(1, 1, 5, 5)
    attn[0, 0, 0, 1:] = torch.tensor([0.1, 0.2, 0.3, 0.4])
    attn[0, 0, 1:, 1:] = torch.eye(4)
    token = torch.tensor([[[[1.0, 4.0], [9.0, 0.0]]]])
    out = attention_cam([attn], token, num_prefix=1, last_n=1)
    expected = torch.sqrt(torch.tensor([0.1, 0.2, 0.3, 0.4]) * torch.tensor([1.0, 4.0, 9.0, 0.0])).reshape(1, 1, 2, 2)
    torch.testing.assert_close(out, expected)
    swap = torch.zeros(1, 1, 5, 5)
    swap[0, 0, 0, 1:] = attn[0, 0, 0, 1:]
    swap[0, 0, 1:, 1:] = torch.tensor([[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0.0]])
    refined = attention_cam([attn, swap], token, num_prefix=1, last_n=1)
    affinity = torch.eye(4) + swap[0, 0, 1:, 1:]
    torch.testing.assert_close(refined, (affinity @ expected.flatten()).reshape(1, 1, 2, 2))


def test_eigencam_sign_rule_follows_the_mean_activation():
    a = torch.zeros(1, 2, 3, 3)
    a[0, :, 0, 0] = 5.0
    projection = -a[:, 0].clone()
    fixed = sign_corrected(projection, a)
    assert float(fixed[0, 0, 0]) == 5.0


def test_layer_fusions():
    maps = torch.rand(2, 1, 1, 4, 4)
    scores = torch.tensor([[[0.1]], [[0.9]]])
    torch.testing.assert_close(fuse_layers(maps, "select", scores), maps[1])
    torch.testing.assert_close(fuse_layers(maps, "max_tanh"), torch.tanh(2 * maps).amax(0))
    model = ToyCNN().eval()
    out = layer_select_cams(model, torch.randn(2, 3, 16, 16), torch.tensor([[0], [-1]]),
                            ["body.1", "features"], method="gradcam")
    assert out.shape == (2, 1, 16, 16) and out[1].abs().sum() == 0
