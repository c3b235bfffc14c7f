"""A training stage resumed from last.ckpt ends with the weights of an uninterrupted run; the batches
do not depend on the loader's workers."""

import torch
from helpers import StopAt

from wsss.config import RunConfig
from wsss.data.datamodule import WSSSDataModule
from wsss.data.sampling import StepBatchSampler, decode_index
from wsss.models.weights import read_checkpoint
from wsss.stages import training
from wsss.stages.train_cls import classifier_ckpt, run_train_cls


def tiny(out, root) -> RunConfig:
    cfg = RunConfig(out=str(out), progress=False)
    cfg.data.root = str(root)
    cfg.data.kwargs = {"n_train": 12, "n_val": 4, "image_size": 48}
    cfg.trainer.accelerator, cfg.trainer.loggers = "cpu", []
    c = cfg.classifier
    c.backbone, c.pretrained, c.max_steps, c.batch_size, c.crop_size, c.warmup_steps = "resnet10t", False, 8, 4, 48, 2
    return cfg


def test_a_resumed_classifier_matches_an_uninterrupted_one(tmp_path, monkeypatch):
    whole = tiny(tmp_path / "whole", tmp_path / "data")
    run_train_cls(whole)
    cut = tiny(tmp_path / "cut", tmp_path / "data")
    real = training.make_trainer

    def stopping(*args, **kwargs):
        trainer = real(*args, **kwargs)
        trainer.callbacks.append(StopAt(5))  # mid-epoch (3 steps per epoch), after the checkpoint at step 4
        return trainer

    with monkeypatch.context() as patch:
        patch.setattr(training, "make_trainer", stopping)
        try:
            run_train_cls(cut)
        except Exception as exc:
            assert "stopped at step 5 of 8" in str(exc)
    assert not classifier_ckpt(cut).exists() and (tmp_path / "cut" / "classifier" / "last.ckpt").is_file()
    run_train_cls(cut)
    a = read_checkpoint(classifier_ckpt(whole), "classifier")["state_dict"]
    b = read_checkpoint(classifier_ckpt(cut), "classifier")["state_dict"]
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


def test_batches_do_not_depend_on_loader_workers(tmp_path):
    common = dict(dataset="synthetic", root=str(tmp_path / "s"), crop_size=32, batch_size=4, seed=3,
                  dataset_kwargs={"n_train": 12, "n_val": 2, "image_size": 48})
    batches = []
    for workers in (0, 2):
        loader = WSSSDataModule(task="cls", num_workers=workers, **common).train_dataloader()
        batches.append([b["image"] for b in loader])
    assert len(batches[0]) == 3
    for x, y in zip(*batches):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


def test_the_sampler_starts_at_the_given_step_of_its_epoch():
    step = {"now": 0}
    sampler = StepBatchSampler(10, 3, seed=1, start_step=lambda: step["now"])
    epoch0 = list(sampler)
    assert len(epoch0) == len(sampler) == 3
    flat = [decode_index(i, 10) for b in epoch0 for i in b]
    assert {e for e, _ in flat} == {0} and len({i for _, i in flat}) == 9
    step["now"] = 4  # second batch of epoch 1
    resumed = list(sampler)
    step["now"] = 3
    assert resumed == list(sampler)[1:] and resumed != epoch0[1:]
