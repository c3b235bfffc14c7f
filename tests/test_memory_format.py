"""``trainer.channels_last``: the networks of every stage run in NHWC order when it is on, and give
what the NCHW networks give up to float rounding (CNN CAM methods, CAM export, training steps)."""

import numpy as np
import pytest
import torch
from helpers import tiny_run_config

from wsss.cams import compute_cams
from wsss.data.synthetic import SyntheticDataset
from wsss.models.classifier import Classifier
from wsss.models.network import set_memory_format
from wsss.models.weights import read_checkpoint
from wsss.pseudo import load_cams
from wsss.pseudo.cam_export import export_cams
from wsss.stages.cams import load_classifier
from wsss.stages.train_cls import classifier_ckpt, run_train_cls
from wsss.stages.train_seg import run_train_seg

CNN_METHODS = ["cam", "gradcam", "gradcampp", "smoothgradcampp", "xgradcam", "layercam", "hirescam", "eigencam",
               "cfcam"]


def conv_weights(model: torch.nn.Module) -> list[torch.Tensor]:
    """The 4-D weights whose two memory orders differ (more than one input channel and a kernel > 1)."""
    return [p for p in model.parameters() if p.dim() == 4 and p.shape[1] > 1 and p.shape[2] * p.shape[3] > 1]


def in_order(weight: torch.Tensor, channels_last: bool) -> bool:
    """``weight`` is laid out in the order ``channels_last`` names, and not in the other one."""
    wanted, other = ((torch.channels_last, torch.contiguous_format) if channels_last
                     else (torch.contiguous_format, torch.channels_last))
    return weight.is_contiguous(memory_format=wanted) and not weight.is_contiguous(memory_format=other)


def classifier_pair(num_classes: int = 5) -> tuple[Classifier, Classifier]:
    torch.manual_seed(0)
    nchw = Classifier("resnet10t", num_classes).eval()
    nhwc = Classifier("resnet10t", num_classes).eval()
    nhwc.load_state_dict(nchw.state_dict())
    return nchw, set_memory_format(nhwc, True)


def test_set_memory_format_switches_the_order_and_back():
    nchw, nhwc = classifier_pair()
    weights = conv_weights(nhwc)
    assert weights and all(in_order(w, True) for w in weights)
    assert all(in_order(w, False) for w in conv_weights(nchw))
    x = torch.randn(2, 3, 64, 64)
    features = nhwc.backbone(x).final
    assert features.is_contiguous(memory_format=torch.channels_last) and not features.is_contiguous()
    torch.testing.assert_close(nhwc(x), nchw(x), rtol=1e-4, atol=1e-5)
    set_memory_format(nhwc, False)
    assert all(in_order(w, False) for w in conv_weights(nhwc))


@pytest.mark.parametrize("method", CNN_METHODS)
def test_every_cnn_cam_method_gives_the_nchw_maps(method):
    nchw, nhwc = classifier_pair()
    torch.manual_seed(1)
    images, targets = torch.randn(2, 3, 64, 64), torch.tensor([[0, 3], [2, -1]])
    maps = {}
    for name, model in (("nchw", nchw), ("nhwc", nhwc)):
        torch.manual_seed(2)
        maps[name] = compute_cams(model, images, targets, "feature_map", method=method, normalize="max")
    assert maps["nchw"].abs().amax() > 0.5
    torch.testing.assert_close(maps["nhwc"], maps["nchw"], rtol=1e-3, atol=1e-4)


def test_cam_export_writes_the_nchw_files(tmp_path):
    dataset = SyntheticDataset(tmp_path / "syn", "train", n_train=6, n_val=2, image_size=48)
    nchw, nhwc = classifier_pair(dataset.num_classes - 1)
    for name, model in (("nchw", nchw), ("nhwc", nhwc)):
        export_cams(model, dataset, tmp_path / name, scales=(1.0, 0.5), accelerator="cpu", devices=1, progress=False)
    for image_id in dataset.ids:
        (a, ids_a), (b, ids_b) = load_cams(tmp_path / "nchw" / f"{image_id}.npz"), load_cams(
            tmp_path / "nhwc" / f"{image_id}.npz")
        assert ids_a.tolist() == ids_b.tolist()
        np.testing.assert_allclose(b, a, atol=2e-3)


def test_training_stages_run_in_the_configured_order_and_agree(tmp_path, trainers):
    states = {}
    for channels_last in (True, False):
        cfg = tiny_run_config(tmp_path / f"run_{channels_last}", tmp_path / "data", steps=3)
        cfg.trainer.channels_last = channels_last
        run_train_cls(cfg)
        run_train_seg(cfg, "gt")
        for trainer in trainers[-2:]:
            assert trainer.global_step == 3
            weights = conv_weights(trainer.lightning_module)
            assert weights and all(in_order(w, channels_last) for w in weights)
        assert all(in_order(w, channels_last) for w in conv_weights(load_classifier(cfg)))
        checkpoints = ((classifier_ckpt(cfg), "classifier"),
                       (cfg.out_dir / "segmenter_gt" / "segmenter.ckpt", "segmenter"))
        states[channels_last] = [read_checkpoint(path, kind)["state_dict"] for path, kind in checkpoints]
    for nhwc, nchw in zip(states[True], states[False]):
        for key, value in nchw.items():
            torch.testing.assert_close(nhwc[key], value, rtol=1e-3, atol=1e-4)
