"""ESOL in training: the shrinkage stage freezes the expansion path, a run killed between the stages
resumes into shrinkage with the weights of an uninterrupted run, CAMs come from the final model, and
ESOL composes with other refiners in one config."""

import pytest
import pytorch_lightning as pl
import torch
from helpers import StopAt

from wsss.config import RunConfig
from wsss.models.classifier import Classifier
from wsss.refiners import REFINERS, Refiner, build_refiners
from wsss.stages import training
from wsss.stages.training import fit_resumable
from wsss.train.classification import ClassifierModule

STEPS = 6  # 3 expansion + 3 shrinkage steps


def loader(n=12, classes=3, size=64):  # 3 batches: the stage boundary is an epoch end
    g = torch.Generator().manual_seed(0)
    items = [{"image": torch.randn(3, size, size, generator=g), "label": (torch.rand(classes, generator=g) > 0.5).float(),
              "id": str(i)} for i in range(n)]
    return torch.utils.data.DataLoader(items, batch_size=4)


class Data(pl.LightningDataModule):
    def train_dataloader(self):
        return loader()


def esol_module(specs=None):
    pl.seed_everything(0)
    specs = specs or [{"name": "esol"}]
    return ClassifierModule("resnet10t", 3, refiners=build_refiners(specs), refiner_configs=specs, lr=0.05,
                            max_steps=STEPS, warmup_steps=0)


def trainer(callbacks=()):
    return pl.Trainer(max_steps=STEPS, accelerator="cpu", logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, callbacks=list(callbacks))


class Record(pl.Callback):
    """Per step: stage, which parameters got a gradient, and a copy of every state tensor."""

    def __init__(self):
        self.steps = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        refiner = pl_module.refiners[0]
        self.steps.append({
            "stage": refiner.samplers.stage,
            "grads": {n for n, p in pl_module.model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0},
            "state": {k: v.clone() for k, v in pl_module.model.state_dict().items()},
        })


def test_shrinkage_freezes_the_expansion_path_and_trains_the_second_sampler_with_the_area_loss():
    module, record = esol_module(), Record()
    assert module.stage_ends() == {3: "expansion"}
    fit = trainer([record])
    fit.fit(module, loader())
    assert [s["stage"] for s in record.steps] == ["expansion"] * 3 + ["shrinkage"] * 3
    expansion_grads, shrinkage_grads = record.steps[1]["grads"], record.steps[4]["grads"]
    assert any(n.startswith("backbone.") for n in expansion_grads)
    assert {"feature_map.expansion.offset.weight", "feature_map.expansion.weight"} <= expansion_grads
    assert not any(n.startswith("feature_map.shrinkage.") for n in expansion_grads)  # not used yet
    assert not any(n.startswith(("backbone.", "feature_map.expansion.")) for n in shrinkage_grads)
    assert {"feature_map.shrinkage.offset.weight", "feature_map.shrinkage.weight", "head.classifier.weight"} \
        <= shrinkage_grads
    first, final = record.steps[3]["state"], module.model.state_dict()
    frozen = [k for k in final if k.startswith(("backbone.", "feature_map.expansion."))]
    assert any("running_mean" in k for k in frozen)  # BatchNorm statistics are frozen too
    for key in frozen:
        torch.testing.assert_close(final[key], first[key], rtol=0, atol=0, msg=key)
    assert not torch.equal(final["feature_map.shrinkage.weight"], first["feature_map.shrinkage.weight"])
    assert "train/esol_area" in fit.callback_metrics
    refiner = module.refiners[0]
    assert bool(refiner.expansion_head_taken)
    torch.testing.assert_close(refiner.expansion_head, record.steps[3]["state"]["head.classifier.weight"])


def test_a_run_killed_between_the_stages_resumes_into_shrinkage(tmp_path, monkeypatch):
    def config(out):
        cfg = RunConfig(out=str(out))
        cfg.trainer.accelerator, cfg.trainer.loggers, cfg.progress = "cpu", [], False
        return cfg

    whole = tmp_path / "whole" / "classifier" / "classifier.ckpt"
    uninterrupted = esol_module()
    fit_resumable(config(tmp_path / "whole"), uninterrupted, Data(), whole, "classifier", STEPS, checkpoint_every=100)

    cut = tmp_path / "cut" / "classifier" / "classifier.ckpt"
    real_make = training.make_trainer

    def make_with_stop(*args, **kwargs):
        made = real_make(*args, **kwargs)
        made.callbacks.append(StopAt(3))
        return made

    with monkeypatch.context() as patch:
        patch.setattr(training, "make_trainer", make_with_stop)
        with pytest.raises(Exception, match="stopped at step 3 of 6"):
            fit_resumable(config(tmp_path / "cut"), esol_module(), Data(), cut, "classifier", STEPS, checkpoint_every=100)
    assert (cut.parent / "stage_expansion.ckpt").is_file() and not cut.exists()
    resumed, record = esol_module(), Record()
    real_trainer = training.make_trainer

    def make_with_record(*args, **kwargs):
        made = real_trainer(*args, **kwargs)
        made.callbacks.append(record)
        return made

    monkeypatch.setattr(training, "make_trainer", make_with_record)
    fit_resumable(config(tmp_path / "cut"), resumed, Data(), cut, "classifier", STEPS, checkpoint_every=100)
    assert [s["stage"] for s in record.steps] == ["shrinkage"] * 3  # straight into the second stage
    assert not any(n.startswith(("backbone.", "feature_map.expansion.")) for n in record.steps[0]["grads"])
    a, b = uninterrupted.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)

    rebuilt = Classifier.from_checkpoint(cut).eval()
    (attached,) = rebuilt.attached_refiners
    assert rebuilt.feature_map is attached.samplers and attached.samplers.stage == "shrinkage"
    x = torch.randn(2, 3, 64, 64)
    features = rebuilt.backbone(x).final
    final_map = attached.samplers.shrinkage(attached.samplers.expansion(features))
    torch.testing.assert_close(rebuilt.cam(x), rebuilt.head.cam(final_map))  # CAMs of the final model
    torch.testing.assert_close(rebuilt(x), resumed.model.eval()(x))


class ExtraLoss(Refiner):
    """A refiner with a loss of its own, to list next to ESOL."""

    name = "extra_loss"
    families = ("cnn",)

    def losses(self, batch, outputs, step):
        return {"extra_energy": (0.01, outputs["features"].pow(2).mean())}


def test_esol_composes_with_other_refiners_in_one_config(monkeypatch):
    monkeypatch.setitem(REFINERS, "extra_loss", ExtraLoss)
    module = esol_module([{"name": "none"}, {"name": "esol", "expansion_fraction": 0.5}, {"name": "extra_loss"}])
    fit = trainer()
    fit.fit(module, loader())
    assert module.global_step == STEPS
    assert {"train/extra_energy", "train/esol_area", "train/cls"} <= set(fit.callback_metrics)
    assert all(torch.isfinite(v) for v in fit.callback_metrics.values())
