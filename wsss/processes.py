"""Child processes that end with their parent: a killed stage leaves no worker writing behind it."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
from collections.abc import Callable
from functools import partial


def die_with_parent(parent_pid: int) -> None:
    """In a child process of ``parent_pid`` (pool worker initializer, ``preexec_fn``): ask Linux to
    SIGKILL this process when its parent dies. A parent killed between the fork and this call sends no
    signal, so a child that already lost ``parent_pid`` exits here. Elsewhere a no-op."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent_pid:
        os._exit(1)


def pool_worker_init(parent_pid: int) -> None:
    """Initializer of :func:`worker_pool`'s workers: end with the parent, and one torch
    thread each (a worker per core; torch's own threads would oversubscribe them)."""
    import torch

    die_with_parent(parent_pid)
    torch.set_num_threads(1)


def worker_pool(workers: int):
    """A process pool of ``workers`` (fork on POSIX) whose workers end with this process and run one
    torch thread each (:func:`pool_worker_init`)."""
    context = mp.get_context("fork" if os.name == "posix" else "spawn")
    return context.Pool(workers, initializer=pool_worker_init, initargs=(os.getpid(),))


def loader_worker_init(worker_id: int, parent_pid: int) -> None:
    """``worker_init_fn`` of every DataLoader (:func:`loader_worker_init_fn`): end with the parent.
    (OpenCV's thread pool is left alone: changing it in a forked worker can deadlock on a lock the
    parent's pool held at fork.)"""
    die_with_parent(parent_pid)


def loader_worker_init_fn() -> Callable[[int], None]:
    """The DataLoader ``worker_init_fn`` of this process: :func:`loader_worker_init` bound to its pid."""
    return partial(loader_worker_init, parent_pid=os.getpid())


def loader_workers(num_workers: int | None) -> int:
    """``data.num_workers`` resolved: None is one worker per core beyond the first, at most 4."""
    if num_workers is None:
        return max(0, min(4, (os.cpu_count() or 1) - 1))
    return num_workers


def export_loader_workers(num_workers: int | None, accelerator: str) -> int:
    """Loader processes of the CAM export: ``data.num_workers`` when set, else :func:`loader_workers`'
    default on a GPU and none on the CPU. There an image's forwards at every scale and flip cost many
    times its decoding, and a loader process takes a share of the few cores from them (on 2 cores one
    worker made the stage 1.04x to 1.2x slower than none, ``scripts/bench.py export`` and probes)."""
    import torch

    if num_workers is not None:
        return num_workers
    return loader_workers(None) if accelerator != "cpu" and torch.cuda.is_available() else 0
