"""The refiner machinery every refiner builds on: families, stage schedules with checkpoints at the
boundaries and resume into the next stage, per-stage learning-rate schedules, parameter groups and
rebuilding a trained classifier with its refiners for CAM export."""

import pytest
import pytorch_lightning as pl
import torch
from helpers import StopAt
from torch import nn

from wsss.config import RunConfig
from wsss.errors import ConfigError
from wsss.models.classifier import Classifier
from wsss.refiners import REFINERS, Refiner, build_refiners, refiners_for
from wsss.stages.training import fit_resumable
from wsss.train.classification import ClassifierModule
from wsss.train.optim import lr_multiplier, stage_spans


def loader(n=24, classes=3, size=32):
    g = torch.Generator().manual_seed(0)
    items = [{"image": torch.randn(3, size, size, generator=g), "label": (torch.rand(classes, generator=g) > 0.5).float(),
              "id": str(i)} for i in range(n)]
    return torch.utils.data.DataLoader(items, batch_size=4)


class Scale(nn.Module):
    def __init__(self):
        super().__init__()
        self.gain = nn.Parameter(torch.full((), 2.0))

    def forward(self, x):
        return x * self.gain


class TwoStage(Refiner):
    """Wraps the final map in a learnable gain (inside the model) and freezes it in stage ``b``."""

    name = "two_stage"
    families = ("cnn",)
    restart_schedule_per_stage = True

    def __init__(self, split: float = 0.5):
        super().__init__()
        self.split = split
        self.started: list[str] = []
        self.prepared = False

    def configure_stages(self, max_steps):
        self.stages = [("a", 0), ("b", int(max_steps * self.split))]

    def attach(self, model):
        self.scale = Scale()
        model.feature_map = self.scale

    def on_stage_start(self, name, model):
        self.started.append(name)
        self.scale.gain.requires_grad_(name == "a")

    def prepare_inference(self, model):
        self.prepared = True


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setitem(REFINERS, "two_stage", TwoStage)


def test_a_refiner_refuses_a_backbone_family_it_does_not_support():
    with pytest.raises(ConfigError, match="'toco' supports vit backbones; 'resnet10t' is a cnn backbone"):
        ClassifierModule("resnet10t", 3, refiners=build_refiners([{"name": "toco"}]))
    assert "toco" in refiners_for("vit") and "toco" not in refiners_for("cnn")


def test_new_parameters_placed_inside_the_model_get_the_head_rate_once(registered):
    refiner = TwoStage()
    module = ClassifierModule("resnet10t", 3, refiners=[refiner], lr=0.01, max_steps=4)
    backbone, new = module.parameter_groups()
    assert any(p is refiner.scale.gain for p in new)
    ids = [id(p) for p in backbone + new]
    assert len(ids) == len(set(ids)) == len({id(p) for p in module.parameters()})
    groups = module.configure_optimizers()["optimizer"].param_groups
    assert groups[1]["lr"] == pytest.approx(10 * groups[0]["lr"])


def test_stages_start_freeze_and_restart_the_schedule(registered):
    refiner = TwoStage()
    module = ClassifierModule("resnet10t", 3, refiners=[refiner], lr=0.05, max_steps=6, warmup_steps=0)
    assert module.stage_ends() == {3: "a"}
    trainer = pl.Trainer(max_steps=6, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    gains = []

    class Watch(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            gains.append(float(refiner.scale.gain))

    trainer.callbacks.append(Watch())
    trainer.fit(module, loader())
    assert refiner.started == ["a", "b"]
    assert gains[0] != gains[1] != gains[2] and gains[2:] == [gains[2]] * 4  # trained in a, frozen in b
    assert stage_spans([0, 3], 6) == [(0, 3), (3, 6)]
    schedule = trainer.lr_scheduler_configs[0].scheduler
    assert schedule.lr_lambdas[0](3) == lr_multiplier(0, 3, 0) == 1.0
    assert schedule.lr_lambdas[0](4) == pytest.approx(lr_multiplier(1, 3, 0))


def test_a_run_stopped_after_a_stage_resumes_into_the_next_and_rebuilds_for_cams(registered, tmp_path, monkeypatch):
    cfg = RunConfig(out=str(tmp_path))
    cfg.trainer.accelerator, cfg.trainer.loggers, cfg.progress = "cpu", [], False
    final = tmp_path / "classifier" / "classifier.ckpt"

    def module():
        pl.seed_everything(0)
        return ClassifierModule("resnet10t", 3, refiners=build_refiners([{"name": "two_stage"}]),
                                refiner_configs=[{"name": "two_stage"}], lr=0.05, max_steps=6)

    class Data(pl.LightningDataModule):
        def train_dataloader(self):
            return loader()

    from wsss.stages import training

    real_make = training.make_trainer

    def make_with_stop(*args, **kwargs):
        trainer = real_make(*args, **kwargs)
        trainer.callbacks.append(StopAt(3))
        return trainer

    with monkeypatch.context() as patch:
        patch.setattr(training, "make_trainer", make_with_stop)
        with pytest.raises(Exception, match="stopped at step 3 of 6"):
            fit_resumable(cfg, module(), Data(), final, "classifier", 6, checkpoint_every=100)
    assert (tmp_path / "classifier" / "stage_a.ckpt").is_file() and not final.exists()
    second = module()
    fit_resumable(cfg, second, Data(), final, "classifier", 6, checkpoint_every=100)
    assert second.refiners[0].started == ["b"]  # resumed at the boundary, straight into stage b
    assert second.global_step == 6
    rebuilt = Classifier.from_checkpoint(final).eval()
    (attached,) = rebuilt.attached_refiners
    assert isinstance(attached, TwoStage) and attached.prepared
    assert isinstance(rebuilt.feature_map, Scale)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(rebuilt(x), second.model.eval()(x))
    assert float(rebuilt.feature_map.gain) == float(second.refiners[0].scale.gain) != 2.0
