"""Test helpers shared by several test modules (imported as ``helpers``: pytest puts ``tests/`` on the path)."""

import pytorch_lightning as pl


class StopAt(pl.Callback):
    """Stops training once ``trainer.global_step`` reaches ``step``, as a kill after that step would."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            trainer.should_stop = True
