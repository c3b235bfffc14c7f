"""UsageRefiner on tiny CNN and ViT classifiers: the family rule with the same keys, a frozen EMA
teacher that gets no gradient, the schedule of the consistency term, and Lightning training steps
together with ToCo (it composes)."""

import copy

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from wsss.errors import ConfigError
from wsss.models.classifier import Classifier
from wsss.refiners import REFINERS, build_refiners, refiners_for
from wsss.refiners.toco.heads import ema_update
from wsss.refiners.usage import UsageRefiner
from wsss.train.classification import ClassifierModule

TINY_VIT = dict(backbone_kwargs=dict(depth=3, embed_dim=16, num_heads=2), pooling="gmp", aux_layer=-3)
LABELS = torch.tensor([[1.0, 0, 1], [0, 1, 0]])


def _classifier(family):
    torch.manual_seed(0)
    if family == "cnn":
        return Classifier("resnet10t", 3)
    return Classifier("vit_custom", 3, **TINY_VIT)


def _setup(family, **kw):
    model = _classifier(family)
    (refiner,) = build_refiners([{"name": "usage", **kw}])
    refiner.attach(model)
    return model, refiner, {"image": torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1)),
                            "label": LABELS}


def _terms(model, refiner, batch, step=0):
    outputs = {**model.forward_outputs(batch["image"]), "model": model}
    return refiner.losses(batch, outputs, step)


def test_registered_for_both_families():
    assert REFINERS["usage"] is UsageRefiner
    assert "usage" in refiners_for("cnn") and "usage" in refiners_for("vit")


@pytest.mark.parametrize("family, want", [("cnn", 1.0), ("vit", 0.1)])
def test_same_keys_pick_the_family_temperature_and_can_override_it(family, want):
    _, refiner, _ = _setup(family)
    assert refiner.temperature == want
    _, refiner, _ = _setup(family, temperature=0.5)
    assert refiner.temperature == 0.5


@pytest.mark.parametrize("family", ["cnn", "vit"])
def test_teacher_is_a_frozen_copy_and_gradient_reaches_the_student_only(family):
    model, refiner, batch = _setup(family)
    assert all(not p.requires_grad for p in refiner.teacher.parameters())
    for a, b in zip(refiner.teacher.parameters(), model.parameters(), strict=True):
        assert torch.equal(a, b) and a is not b
    terms = _terms(model, refiner, batch)
    assert set(terms) == {"usage_gen", "usage_cons"}
    assert all(torch.isfinite(v) for _, v in terms.values())
    weight, cons = terms["usage_cons"]
    (weight * cons).backward()
    assert all(p.grad is None for p in refiner.teacher.parameters())
    grads = [p.grad for p in model.backbone.parameters() if p.grad is not None]
    assert grads and sum(g.abs().sum() for g in grads) > 0


def test_teacher_does_not_change_the_student_gradients():
    """The generation term's gradient is the same whether or not the teacher branch ran before it."""
    model, refiner, batch = _setup("vit")
    outputs = {**model.forward_outputs(batch["image"]), "model": model}
    with torch.no_grad():
        refiner.teacher.cam(batch["image"])
    refiner.losses(batch, outputs, 0)["usage_gen"][1].backward()
    with_teacher = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    model.zero_grad()
    plain, gen_only, _ = _setup("vit", consistency_weight=0)
    outputs = {**plain.forward_outputs(batch["image"]), "model": plain}
    gen_only.losses(batch, outputs, 0)["usage_gen"][1].backward()
    without = [p.grad for p in plain.parameters() if p.grad is not None]
    assert gen_only.teacher is None
    assert all(torch.allclose(a, b) for a, b in zip(with_teacher, without, strict=True))


def test_consistency_waits_for_its_start_and_weights_turn_terms_off():
    model, refiner, batch = _setup("cnn", consistency_start=0.25)
    refiner.configure_stages(20)
    assert refiner.stages == []
    assert set(_terms(model, refiner, batch, step=4)) == {"usage_gen"}
    assert set(_terms(model, refiner, batch, step=5)) == {"usage_gen", "usage_cons"}
    model, refiner, batch = _setup("cnn", generation_weight=0)
    assert set(_terms(model, refiner, batch)) == {"usage_cons"}


def test_ema_update_follows_the_optimiser_step():
    model, refiner, batch = _setup("cnn", momentum=0.9)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    before = copy.deepcopy(refiner.teacher)
    sum(w * v for w, v in _terms(model, refiner, batch).values()).backward()
    opt.step()
    # nothing but the hook moves the teacher
    assert all(torch.equal(a, b) for a, b in zip(before.parameters(), refiner.teacher.parameters(), strict=True))
    refiner.on_after_optimizer_step(model, 0)
    want = copy.deepcopy(before)
    ema_update(want, model, 0.9)
    for t, w, s, b in zip(refiner.teacher.parameters(), want.parameters(), model.parameters(), before.parameters(),
                          strict=True):
        assert torch.equal(t, w)
        assert torch.allclose(t, 0.9 * b + 0.1 * s, atol=1e-6)
    assert any(not torch.equal(t, b) for t, b in zip(refiner.teacher.parameters(), before.parameters(), strict=True))


def test_a_rebuilt_refiner_loads_the_trained_teacher():
    model, refiner, _ = _setup("vit")
    with torch.no_grad():
        next(refiner.teacher.parameters()).add_(1.0)
    _, fresh, _ = _setup("vit")
    fresh.load_state_dict(refiner.state_dict())
    assert torch.equal(next(fresh.teacher.parameters()), next(refiner.teacher.parameters()))


@pytest.mark.parametrize("kw", [dict(temperature=0), dict(cnn_temperature=-1), dict(momentum=1.5),
                                dict(drop_threshold=0), dict(view_scale=0), dict(consistency_start=5)])
def test_bad_options_are_config_errors(kw):
    with pytest.raises(ConfigError):
        UsageRefiner(**kw)
    with pytest.raises(ConfigError, match="before attach"):
        UsageRefiner().losses({}, {}, 0)


class RandomImages(Dataset):
    def __init__(self, n=6):
        g = torch.Generator().manual_seed(0)
        self.images = torch.randn(n, 3, 64, 64, generator=g)
        self.labels = (torch.rand(n, 3, generator=g) < 0.5).float()
        self.labels[:, 0] = 1.0

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return {"image": self.images[i], "label": self.labels[i], "id": str(i)}


def test_it_composes_with_toco_in_lightning_training_steps():
    torch.manual_seed(0)
    configs = [{"name": "toco", "proj_hidden_dim": 16, "proj_bottleneck_dim": 8, "proj_dim": 12,
                "decoder_channels": 8, "n_local": 2, "local_size": 32, "cam_scales": [1.0], "seg_warmup": 1},
               {"name": "usage", "momentum": 0.5}]
    refiners = build_refiners(configs)
    module = ClassifierModule("vit_custom", 3, refiners=refiners, refiner_configs=configs, optimizer="adamw",
                              lr=1e-3, max_steps=3, warmup_steps=0, **TINY_VIT)
    usage = refiners[1]
    opt_ids = {id(p) for g in module.configure_optimizers()["optimizer"].param_groups for p in g["params"]}
    assert not any(id(p) in opt_ids for p in usage.teacher.parameters())
    teacher0 = copy.deepcopy(usage.teacher)
    logged = []

    class Terms(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            logged.append({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/")})

    trainer = pl.Trainer(max_steps=3, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         limit_val_batches=0, callbacks=[Terms()])
    trainer.fit(module, DataLoader(RandomImages(), batch_size=2))
    assert len(logged) == 3
    assert {"train/usage_gen", "train/usage_cons", "train/toco_ptc", "train/toco_ctc"} <= set(logged[0])
    assert "train/toco_seg" in logged[-1]
    assert all(torch.isfinite(torch.tensor(list(step.values()))).all() for step in logged)
    assert any(not torch.equal(a, b) for a, b in zip(teacher0.parameters(), usage.teacher.parameters(), strict=True))
    assert all(not p.requires_grad for p in usage.teacher.parameters())
