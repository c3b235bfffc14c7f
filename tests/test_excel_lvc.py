"""ExCEL's Learnable Visual Calibration (spec C.6, C.7, C.11 items 8-11): the shift, the losses, the
warm-up switch and the frozen CLIP."""

import os

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from wsss.refiners.excel.clip_model import build_open_clip
from wsss.refiners.excel.lvc import affinity_loss, affinity_target, dynamic_shift, lvc_affinity, radius_mask
from wsss.refiners.excel.lvc_module import LvcModule
from wsss.refiners.excel.methods import ClipCamModel
from wsss.refiners.toco.losses import balanced_seg_loss

os.environ["HF_HUB_OFFLINE"] = "1"

TINY = {"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 6, "width": 64, "head_width": 16, "patch_size": 8},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 4, "layers": 1}}
OPTIONS = {"keep": 0.9, "svc_layers": 5, "class_prior": True, "feature_norm": "token", "head_sum_in_calibrated": True,
           "affinity_layers": 6, "box_threshold": 0.4, "affinity": True, "par_iter": 2}


def clip_model():
    g = torch.Generator().manual_seed(0)
    emb = {"classes": F.normalize(torch.randn(3, 32, generator=g), dim=-1),
           "background": F.normalize(torch.randn(4, 32, generator=g), dim=-1),
           "bank": F.normalize(torch.randn(32, 6, generator=g), dim=0)}
    return ClipCamModel(build_open_clip("ViT-B-16-quickgelu", None, TINY, seed=0), emb, OPTIONS).eval()


def module(**kwargs):
    return LvcModule(clip_model(), dim=32, decoder_depth=1, decoder_heads=4, warmup_steps=1, max_steps=4, **kwargs)


def batches(n=2):
    g = torch.Generator().manual_seed(1)
    return [{"image": torch.randn(2, 3, 32, 40, generator=g), "label": torch.tensor([[1.0, 0, 1], [0, 1, 0]])}
            for _ in range(n)]


def test_shift_rows_sum_to_one_where_finite():
    z = torch.randn(2, 8, 3, 4, generator=torch.Generator().manual_seed(0))
    shift = dynamic_shift(z)
    assert shift.shape == (2, 12, 12) and torch.isfinite(shift).all()
    sums = shift.sum(-1)
    torch.testing.assert_close(sums[sums > 0], torch.ones_like(sums[sums > 0]))
    assert (shift >= 0).all()


def test_seg_loss_is_the_mean_of_background_and_foreground_ce_and_ignores_255():
    logits = torch.randn(1, 3, 2, 2, requires_grad=True)
    labels = torch.tensor([[[0, 1], [2, 255]]])
    loss = balanced_seg_loss(logits, labels)
    ce = F.cross_entropy(logits, labels.clamp(max=2), reduction="none")[0]
    torch.testing.assert_close(loss, 0.5 * (ce[0, 0] + (ce[0, 1] + ce[1, 0]) / 2))
    loss.backward()
    assert (logits.grad[0, :, 1, 1] == 0).all()


def test_affinity_loss_zero_when_aseg_equals_target_and_window_respected():
    labels = torch.tensor([[0, 0, 1, 1] * 4]).reshape(1, 4, 4)
    target = affinity_target(labels, (4, 4), radius=1)
    assert (target[0][~radius_mask((4, 4), 1)] == 255).all()
    aseg = (target == 1).float() + torch.rand(target.shape) * (target == 255)
    assert affinity_loss(aseg, target) == 0
    assert affinity_loss(1 - aseg, target) > 0


def test_lvc_affinity_is_aseg_times_the_mean_of_the_closest_layers():
    aseg = torch.rand(1, 4, 4)
    layers = [torch.rand(1, 5, 5) for _ in range(3)]
    out = lvc_affinity(aseg, layers)
    diffs = torch.stack([(aseg - a[:, 1:, 1:]).sum() for a in layers])
    kept = [a[:, 1:, 1:] for a, d in zip(layers, diffs) if d <= diffs.mean()]
    torch.testing.assert_close(out, torch.stack(kept).mean(0) * aseg)


def test_warm_up_switches_the_shift_on_at_the_configured_step():
    m = module(shift_start=3).eval()
    images = batches(1)[0]["image"]
    x = m.clip_model.patch_input(images)
    static = m.static_forward(x)
    z = m.adapter(static.layers, static.grid)
    assert torch.equal(m.cam_tokens(x, static, z, step=2), static.tokens)
    assert not m.shift_on(2) and m.shift_on(3)
    assert not torch.allclose(m.cam_tokens(x, static, z, step=3), static.tokens)


def test_training_steps_leave_clip_frozen_and_unchanged(tmp_path):
    m = module(shift_start=1, self_label_start=1)
    clip_before = {k: v.clone() for k, v in m.clip_model.state_dict().items()}
    adapter_before = [p.clone() for p in m.adapter.parameters()]
    optimiser = m.configure_optimizers()["optimizer"]
    in_optimiser = {id(p) for g in optimiser.param_groups for p in g["params"]}
    assert not in_optimiser & {id(p) for p in m.clip_model.parameters()}
    trainer = pl.Trainer(max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(m, torch.utils.data.DataLoader(batches(2), batch_size=None))
    assert not any(p.requires_grad for p in m.clip_model.parameters())
    assert all(torch.equal(v, m.clip_model.state_dict()[k]) for k, v in clip_before.items())
    assert any(not torch.equal(a, b) for a, b in zip(adapter_before, m.adapter.parameters()))
    assert m(batches(1)[0]["image"]).shape == (2, 4, 32, 40)
