"""Test helpers shared by several test modules (imported as ``helpers``: pytest puts ``tests/`` on the path)."""

from pathlib import Path

import pytorch_lightning as pl

from wsss.config import RunConfig


class StopAt(pl.Callback):
    """Stops training once ``trainer.global_step`` reaches ``step``, as a kill after that step would."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            trainer.should_stop = True


def tiny_run_config(out: Path, data_root: Path, steps: int = 2) -> RunConfig:
    """A run of ``steps`` classifier and segmenter steps of a random ResNet-10t on 8 + 4 synthetic
    48 px images, on the CPU without loggers."""
    cfg = RunConfig(out=str(out), progress=False)
    cfg.data.root = str(data_root)
    cfg.data.kwargs = {"n_train": 8, "n_val": 4, "image_size": 48}
    cfg.trainer.accelerator, cfg.trainer.loggers = "cpu", []
    for section in (cfg.classifier, cfg.segmenter):
        section.backbone, section.pretrained, section.batch_size, section.crop_size = "resnet10t", False, 4, 48
        section.max_steps, section.warmup_steps = steps, 0
    cfg.segmenter.head = "largefov"
    return cfg
