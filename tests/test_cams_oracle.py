"""Oracle tests: our CAMs against pytorch-grad-cam and torchcam on the same timm model, layer and input."""

import numpy as np
import pytest
import timm
import torch
from pytorch_grad_cam import EigenCAM, GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, XGradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from wsss.cams import compute_cams

PGC = {"gradcam": GradCAM, "gradcampp": GradCAMPlusPlus, "xgradcam": XGradCAM, "layercam": LayerCAM,
       "hirescam": HiResCAM}


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    model = timm.create_model("resnet18", pretrained=False, num_classes=10).eval()
    images = torch.randn(3, 3, 80, 96)
    targets = torch.tensor([[1, 4], [7, 2], [0, 9]])
    return model, images, targets


def pgc_slots(cls, model, images, targets):
    """pytorch-grad-cam once per class slot: [B, K, H, W]."""
    with cls(model=model, target_layers=[model.layer4]) as cam:
        slots = [cam(input_tensor=images, targets=[ClassifierOutputTarget(int(c)) for c in targets[:, k]])
                 for k in range(targets.shape[1])]
    return np.stack(slots, axis=1)


@pytest.mark.parametrize("method", sorted(PGC))
def test_gradient_methods_equal_pytorch_grad_cam(setup, method):
    model, images, targets = setup
    ours = compute_cams(model, images, targets, "layer4", method=method, normalize="minmax").numpy()
    theirs = pgc_slots(PGC[method], model, images, targets)
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_eigencam_equals_pytorch_grad_cam_up_to_sign(setup):
    model, images, targets = setup
    ours = compute_cams(model, images, targets, "layer4", method="eigencam", normalize=None)
    with EigenCAM(model=model, target_layers=[model.layer4]) as cam:
        from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection

        acts = []
        handle = model.layer4.register_forward_hook(lambda m, i, o: acts.append(o.detach().numpy()))
        model(images)
        handle.remove()
        del cam
    theirs = get_2d_projection(acts[0])
    np.testing.assert_allclose(np.abs(ours[:, 0].numpy()), np.abs(theirs), rtol=1e-4, atol=1e-4)
    # the sign rule makes the map correlate positively with the mean activation
    mean_act = acts[0].mean(1).reshape(3, -1)
    for b in range(3):
        assert np.corrcoef(ours[b, 0].numpy().ravel(), mean_act[b])[0, 1] >= 0


def test_gradcam_equals_torchcam(setup):
    from torchcam.methods import GradCAM as TorchcamGradCAM

    model, images, targets = setup
    ours = compute_cams(model, images, targets[:, :1], "layer4", method="gradcam", normalize=None)[:, 0]
    model.zero_grad()
    extractor = TorchcamGradCAM(model, target_layer="layer4")
    scores = model(images)
    theirs = extractor(class_idx=[int(c) for c in targets[:, 0]], scores=scores)[0]
    extractor.remove_hooks()
    ours_n = ours.clamp(min=0)
    ours_n = (ours_n - ours_n.flatten(1).amin(1)[:, None, None])
    ours_n = ours_n / (ours_n.flatten(1).amax(1)[:, None, None] + 1e-8)
    np.testing.assert_allclose(ours_n.numpy(), theirs.detach().numpy(), atol=1e-5)


def test_cam_equals_gradcam_for_a_gap_linear_head(setup):
    model, images, targets = setup
    cam = compute_cams(model, images, targets, "layer4", method="cam", normalize=None).double()
    grad = compute_cams(model, images, targets, "layer4", method="gradcam", normalize=None).double()
    h, w = cam.shape[-2:]
    np.testing.assert_allclose(grad.numpy() * h * w, cam.numpy(), rtol=1e-3, atol=1e-5)


def test_padding_targets_give_zero_maps_and_state_is_restored(setup):
    model, images, _ = setup
    model.train()
    flags = [p.requires_grad for p in model.parameters()]
    cams = compute_cams(model, images, torch.tensor([[3, -1], [-1, -1], [5, 6]]), "layer4", method="gradcampp")
    assert cams[0, 1].abs().sum() == 0 and cams[1].abs().sum() == 0
    assert cams[0, 0].max() > 0.9
    assert model.training and [p.requires_grad for p in model.parameters()] == flags
    model.eval()
