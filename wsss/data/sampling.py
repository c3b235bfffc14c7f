"""A training order that is a pure function of (seed, step): resumable, worker-count independent.

The batch of global step ``s`` is fixed by the seed alone: epoch ``s // steps_per_epoch`` shuffles the
images with a generator seeded by ``(seed, epoch)``, and each image's augmentation is drawn from a
generator seeded by ``(seed, epoch, image index)``. A run resumed from a checkpoint at step ``s``
therefore sees exactly the batches and augmentations an uninterrupted run sees from step ``s`` on,
whatever the number of loader workers. Indices travel from the sampler to the dataset encoded as
``epoch * n + i`` so that workers need no shared state.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import Sampler


def encode_index(epoch: int, index: int, n: int) -> int:
    return epoch * n + index


def decode_index(encoded: int, n: int) -> tuple[int, int]:
    """(epoch, image index) of an index made by :func:`encode_index`."""
    return divmod(int(encoded), n)


def sample_generator(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The augmentation generator of image ``index`` in ``epoch``."""
    return np.random.default_rng([seed, epoch, index])


def _world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class StepBatchSampler(Sampler[list[int]]):
    """Batches of encoded indices, ``batch_size`` per rank, dropping the last incomplete batch.

    Args:
        n: images in the dataset.
        batch_size: images per batch (per rank).
        seed: seed of the order.
        start_step: called when an epoch's iteration starts; returns the global step its first
            batch will train (Lightning's ``trainer.global_step``). Iteration starts at that step's
            place in its epoch, so a resumed run continues the epoch it stopped in.

    Under DDP each rank takes every ``world_size``-th batch of one shared permutation.
    """

    def __init__(self, n: int, batch_size: int, seed: int, start_step: Callable[[], int] | None = None):
        if n < batch_size:
            raise ValueError(f"{n} images are fewer than one batch of {batch_size}")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.start_step = start_step or (lambda: 0)

    def steps_per_epoch(self) -> int:
        _, world = _world()
        return max(1, self.n // (self.batch_size * world))

    def __len__(self) -> int:
        return self.steps_per_epoch()

    def batches(self, epoch: int) -> list[list[int]]:
        """This rank's batches of ``epoch`` (encoded indices)."""
        rank, world = _world()
        order = np.random.default_rng([self.seed, epoch]).permutation(self.n)
        per_step = self.batch_size * world
        out = []
        for step in range(self.steps_per_epoch()):
            chunk = order[step * per_step:(step + 1) * per_step]
            mine = chunk[rank * self.batch_size:(rank + 1) * self.batch_size]
            out.append([encode_index(epoch, int(i), self.n) for i in mine])
        return out

    def __iter__(self) -> Iterator[list[int]]:
        epoch, offset = divmod(int(self.start_step()), self.steps_per_epoch())
        yield from self.batches(epoch)[offset:]
