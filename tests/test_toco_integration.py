"""ToCo inside the real ClassifierModule: learning-rate schedule (A.10 item 16) and three Lightning
training steps on random 64 px data with the teacher moving only by EMA."""

import copy

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from wsss.refiners.toco import ToCoRefiner
from wsss.refiners.toco.heads import ema_update
from wsss.train.classification import ClassifierModule
from wsss.train.optim import lr_multiplier

TINY_VIT = dict(depth=4, embed_dim=16, num_heads=2)
SMALL = dict(proj_hidden_dim=16, proj_bottleneck_dim=8, proj_dim=12, decoder_channels=8, n_local=2,
             local_size=32, cam_scales=(1.0, 0.5), seg_warmup=1)


@pytest.mark.parametrize(
    "step, want",
    [(0, 1e-6), (750, 0.5000005), (1499, 0.9993333), (1500, 0.9322396), (19999, 1.34609e-4)],
)
def test_toco_lr_multipliers(step, want):
    got = lr_multiplier(step, max_steps=20000, warmup_steps=1500, warmup_ratio=1e-6, power=0.9)
    assert got == pytest.approx(want, rel=1e-5)
    assert 6e-5 * lr_multiplier(19999, 20000, 1500) == pytest.approx(8.0765e-9, rel=1e-4)


def _module(refiner, **kw):
    return ClassifierModule(backbone="vit_custom", num_classes=3, pooling="gmp", aux_layer=-3,
                            backbone_kwargs=TINY_VIT, optimizer="adamw", lr=6e-5, weight_decay=0.01,
                            head_lr_mult=10.0, refiners=[refiner], **kw)


def test_refiner_parameters_get_head_lr_and_teacher_is_not_optimised():
    refiner = ToCoRefiner("voc", **SMALL)
    module = _module(refiner, warmup_steps=1500, max_steps=20000)
    opt = module.configure_optimizers()["optimizer"]
    # the scheduler has already applied the step-0 factor (1e-6); initial_lr is the group's base lr
    assert all(g["lr"] == pytest.approx(g["initial_lr"] * 1e-6) for g in opt.param_groups)
    groups = {id(p): g["initial_lr"] for g in opt.param_groups for p in g["params"]}
    assert all(groups[id(p)] == pytest.approx(6e-4) for p in refiner.proj_head.parameters() if p.requires_grad)
    assert all(groups[id(p)] == pytest.approx(6e-4) for p in refiner.decoder.parameters())
    assert all(groups[id(p)] == pytest.approx(6e-5) for p in module.model.backbone.parameters())
    assert not any(id(p) in groups for p in refiner.teacher_head.parameters())


class RandomImages(Dataset):
    def __init__(self, n=8):
        g = torch.Generator().manual_seed(0)
        self.images = torch.randn(n, 3, 64, 64, generator=g)
        self.labels = (torch.rand(n, 3, generator=g) < 0.5).float()
        self.labels[:, 0] = 1.0

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return {"image": self.images[i], "label": self.labels[i],
                "mask": torch.full((64, 64), 255, dtype=torch.long), "id": str(i)}


class RecordingToCo(ToCoRefiner):
    """Records the teacher around every hook so the test can check it moves by EMA only."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.at_losses, self.ema_steps, self.loss_values = [], [], []

    def losses(self, batch, outputs, step):
        self.at_losses.append((copy.deepcopy(self.teacher_head), copy.deepcopy(self.proj_head)))
        terms = super().losses(batch, outputs, step)
        self.loss_values.append({k: float(v.detach()) for k, (_, v) in terms.items()})
        return terms

    def on_after_optimizer_step(self, model, step):
        before = copy.deepcopy(self.teacher_head)
        super().on_after_optimizer_step(model, step)
        self.ema_steps.append((step, before, copy.deepcopy(self.proj_head), copy.deepcopy(self.teacher_head)))


def _same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))


@pytest.mark.parametrize("faithful", [False, True])
def test_three_training_steps_with_toco(faithful):
    torch.manual_seed(0)
    refiner = RecordingToCo(dataset="voc", faithful=faithful, **SMALL)
    module = _module(refiner, warmup_steps=1, max_steps=3)
    totals = []

    class Totals(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            totals.append(float(outputs["loss"]))

    trainer = pl.Trainer(max_steps=3, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         limit_val_batches=0, callbacks=[Totals()])
    trainer.fit(module, DataLoader(RandomImages(), batch_size=2, shuffle=False))

    assert len(totals) == 3 and all(torch.isfinite(torch.tensor(totals)))
    names = [set(v) for v in refiner.loss_values]
    assert names[0] == {"toco_ptc", "toco_ctc"}  # seg starts at step 1 (faithful: step 2)
    assert names[1] == ({"toco_ptc", "toco_ctc"} if faithful else {"toco_ptc", "toco_ctc", "toco_seg"})
    assert names[-1] == {"toco_ptc", "toco_ctc", "toco_seg"}
    assert all(torch.isfinite(torch.tensor(list(v.values()))).all() for v in refiner.loss_values)
    # the teacher starts equal to the student and only EMA moves it
    teacher0, student0 = refiner.at_losses[0]
    assert _same(teacher0, student0)
    assert [s for s, *_ in refiner.ema_steps] == [0, 1, 2]
    for k, (_, before, student_after, teacher_after) in enumerate(refiner.ema_steps):
        if faithful:
            # EMA ran at the start of the step's forward; nothing touches the teacher afterwards
            assert _same(before, teacher_after)
            if k + 1 < len(refiner.at_losses):
                want = copy.deepcopy(refiner.at_losses[k + 1][0])
                ema_update(want, refiner.at_losses[k + 1][1], refiner.momentum)
                assert _same(want, refiner.ema_steps[k + 1][1])
        else:
            # the optimiser step left the teacher as the forward saw it, then one EMA update
            assert _same(before, refiner.at_losses[k][0])
            want = copy.deepcopy(before)
            ema_update(want, student_after, refiner.momentum)
            assert _same(want, teacher_after)
    assert not _same(refiner.teacher_head, refiner.proj_head)
    assert not _same(refiner.teacher_head, teacher0)
