"""ToCoRefiner orchestration on a tiny ViT classifier: attach, scheduled losses, teacher
isolation (A.10 item 12), EMA (item 13) in both modes, a few optimiser steps."""

import copy

import pytest
import torch
from torch import nn

from wsss.errors import ConfigError
from wsss.models.classifier import Classifier
from wsss.refiners import build_refiners
from wsss.refiners.toco import ToCoRefiner
from wsss.refiners.toco.heads import ProjectionHead, ema_update

NUM_FG = 3
SMALL = dict(proj_hidden_dim=16, proj_bottleneck_dim=8, proj_dim=12, decoder_channels=8, n_local=2,
             local_size=32, cam_scales=(1.0, 0.5))


def _classifier(**kw):
    return Classifier("vit_custom", NUM_FG, pooling="gmp", aux_layer=-3,
                      backbone_kwargs=dict(depth=4, embed_dim=16, num_heads=2), **kw)


def _setup(faithful=False, dataset="voc", **kw):
    torch.manual_seed(0)
    model = _classifier()
    refiner = ToCoRefiner(dataset, faithful=faithful, **{**SMALL, **kw})
    refiner.attach(model)
    batch = {"image": torch.randn(2, 3, 64, 64), "label": torch.tensor([[1.0, 0, 1], [0, 1, 0]])}
    return model, refiner, batch


def _losses(model, refiner, batch, step):
    outputs = {**model.forward_outputs(batch["image"]), "model": model}
    return refiner.losses(batch, outputs, step)


def _total(terms):
    return sum(w * loss for w, loss in terms.values())


def test_attach_adds_heads_and_frozen_teacher():
    model, refiner, _ = _setup()
    assert isinstance(refiner.proj_head, ProjectionHead)
    assert all(not p.requires_grad for p in refiner.teacher_head.parameters())
    g = refiner.proj_head.last_layer.parametrizations.weight.original0
    assert not g.requires_grad and torch.all(g == 1)
    for a, b in zip(refiner.proj_head.parameters(), refiner.teacher_head.parameters(), strict=True):
        assert torch.equal(a, b)
    convs = [m for m in refiner.decoder.modules() if isinstance(m, nn.Conv2d)]
    assert [c.bias for c in convs] == [None] * 3 and convs[-1].out_channels == NUM_FG + 1
    assert convs[0].dilation == (5, 5)


def test_attach_rejects_non_vit_and_missing_aux_head():
    model = _classifier()
    model.backbone.is_vit = False
    with pytest.raises(ConfigError, match="ViT"):
        ToCoRefiner().attach(model)
    with pytest.raises(ConfigError, match="aux_layer"):
        ToCoRefiner().attach(Classifier("vit_custom", NUM_FG, backbone_kwargs=dict(depth=2, embed_dim=16, num_heads=2)))


def test_build_refiners_from_config():
    refiners = build_refiners([{"name": "none"}, {"name": "toco", "dataset": "coco", "faithful": True}])
    assert type(refiners[0]).__name__ == "Refiner" and refiners[1].temperature == 1.0
    with pytest.raises(ConfigError, match="unknown refiner"):
        build_refiners([{"name": "tocoo"}])
    with pytest.raises(ConfigError, match="name"):
        build_refiners([{"dataset": "voc"}])
    with pytest.raises(ConfigError, match="bad options"):
        build_refiners([{"name": "toco", "nonsense": 1}])


@pytest.mark.parametrize("faithful", [True, False])
def test_losses_follow_the_schedule_and_are_finite(faithful):
    model, refiner, batch = _setup(faithful)
    terms = _losses(model, refiner, batch, step=0)
    assert set(terms) == {"toco_ptc", "toco_ctc"}  # seg is off, so it is left out
    assert [terms[k][0] for k in ("toco_ptc", "toco_ctc")] == [0.2, 0.5]
    terms = _losses(model, refiner, batch, step=2001)
    assert set(terms) == {"toco_ptc", "toco_ctc", "toco_seg"} and terms["toco_seg"][0] == 0.1
    assert all(torch.isfinite(loss) and loss.dim() == 0 for _, loss in terms.values())
    _total(terms).backward()
    assert refiner.decoder.body[0].weight.grad is not None
    assert refiner.proj_head.mlp[0].weight.grad is not None
    assert model.backbone.net.blocks[0].attn.qkv.weight.grad.abs().sum() > 0


def test_coco_before_segmentation_has_no_terms():
    model, refiner, batch = _setup(dataset="coco")
    assert _losses(model, refiner, batch, step=100) == {}
    assert set(_losses(model, refiner, batch, step=9000)) == {"toco_seg"}


@pytest.mark.parametrize("faithful", [True, False])
def test_teacher_gets_no_gradient_and_leaves_encoder_gradients_unchanged(faithful):
    model, refiner, batch = _setup(faithful)
    captured = []
    handle = refiner.teacher_head.register_forward_hook(lambda m, i, o: captured.append(o.detach().clone()))
    ctc = _losses(model, refiner, batch, step=0)["toco_ctc"][1]
    handle.remove()
    ctc.backward()
    assert all(p.grad is None for p in refiner.teacher_head.parameters())
    assert not captured[0].requires_grad
    with_teacher = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    refiner.zero_grad(set_to_none=True)
    # same step (same views), the teacher branch replaced by its recorded output as a constant
    refiner.teacher_head.forward = lambda x: captured[0]
    _losses(model, refiner, batch, step=0)["toco_ctc"][1].backward()
    without = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert with_teacher.keys() == without.keys() and len(without) > 10
    for name, grad in with_teacher.items():
        assert torch.equal(grad, without[name]), name


def test_ema_update_formula():
    torch.manual_seed(0)
    student, teacher = ProjectionHead(4, 6, 3, 5), ProjectionHead(4, 6, 3, 5)
    before = {n: p.clone() for n, p in teacher.named_parameters()}
    ema_update(teacher, student, 0.9)
    for name, p in teacher.named_parameters():
        want = 0.9 * before[name] + 0.1 * dict(student.named_parameters())[name]
        assert torch.allclose(p, want, atol=1e-7, rtol=0), name
    assert not torch.equal(teacher.mlp[0].weight, before["mlp.0.weight"])


def _teacher_equals_student(refiner):
    return all(torch.equal(a, b) for a, b in zip(refiner.proj_head.parameters(),
                                                  refiner.teacher_head.parameters(), strict=True))


@pytest.mark.parametrize("faithful", [True, False])
def test_teacher_moves_only_by_ema_after_optimiser_steps(faithful):
    model, refiner, batch = _setup(faithful)
    params = [p for p in list(model.parameters()) + list(refiner.parameters()) if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-2)
    m = refiner.momentum
    for step in range(3):
        teacher_before = copy.deepcopy(refiner.teacher_head)
        student_before = copy.deepcopy(refiner.proj_head)
        terms = _losses(model, refiner, batch, step)
        if faithful:  # EMA at the start of the forward, from the student of the previous step
            want = copy.deepcopy(teacher_before)
            ema_update(want, student_before, m)
            assert all(torch.allclose(a, b, atol=1e-7) for a, b in zip(
                want.parameters(), refiner.teacher_head.parameters(), strict=True))
        else:  # the forward leaves the teacher alone
            assert all(torch.equal(a, b) for a, b in zip(
                teacher_before.parameters(), refiner.teacher_head.parameters(), strict=True))
        if step == 0:
            assert _teacher_equals_student(refiner)  # equal until the first optimiser step
        loss = _total(terms)
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        teacher_mid = copy.deepcopy(refiner.teacher_head)
        opt.step()
        assert all(torch.equal(a, b) for a, b in zip(
            teacher_mid.parameters(), refiner.teacher_head.parameters(), strict=True))
        refiner.on_after_optimizer_step(model, step)
        if not faithful:
            want = copy.deepcopy(teacher_mid)
            ema_update(want, refiner.proj_head, m)
            assert all(torch.allclose(a, b, atol=1e-7) for a, b in zip(
                want.parameters(), refiner.teacher_head.parameters(), strict=True))
    assert not _teacher_equals_student(refiner)


def test_valid_box_marks_padding_ignored_in_seg_labels(monkeypatch):
    model, refiner, batch = _setup()
    seen = {}
    import wsss.refiners.toco.refiner as toco_module

    def spy(logits, labels):
        seen["labels"] = labels
        return logits.sum() * 0
    monkeypatch.setattr(toco_module, "balanced_seg_loss", spy)
    batch["valid_box"] = torch.tensor([[0, 64, 0, 40], [0, 32, 0, 64]])
    _losses(model, refiner, batch, step=5000)
    labels = seen["labels"]
    assert labels.shape == (2, 64, 64)
    assert (labels[0, :, 40:] == 255).all() and (labels[1, 32:] == 255).all()
